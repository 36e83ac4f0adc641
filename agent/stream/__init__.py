"""Frames in motion: immutable frames, sources, detectors, the cross-source pipeline and the
match policy."""
