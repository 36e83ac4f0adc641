"""Exceptions whose message is shown to the user as one line."""


class AgentError(Exception):
    """A user-facing error: the CLI prints `error: <message>` and exits non-zero."""

    exit_code = 2


class ConfigError(AgentError):
    pass


class ModelError(AgentError):
    pass


class InputError(AgentError):
    pass


class FleetError(AgentError):
    """A gallery artefact, key or announcement that cannot be trusted or reached."""

    exit_code = 1


class UntrustedArtefact(FleetError):
    """A gallery artefact or announcement that fails its signature, hash or group check."""
