"""Model runtime: manifests, the registry, inference sessions, preprocessing, extractors and the
embedding cache. Nothing here knows about galleries, streams or publishing."""
