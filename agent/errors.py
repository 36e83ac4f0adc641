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
