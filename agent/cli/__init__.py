"""The `agent` command line: `main` is the console script; the commands live in `app`."""

from __future__ import annotations

import sqlite3
import sys

from agent import __version__
from agent.errors import AgentError

GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "-qq", "--quiet"}


def global_flags_first(args: list[str]) -> list[str]:
    """`agent enroll DIR -q` as `agent -q enroll DIR`: the logging flags belong to `agent`, but
    users put them anywhere (no sub-command has options of these names)."""
    if "--" in args:
        cut = args.index("--")
        return global_flags_first(args[:cut]) + args[cut:]
    flags = [a for a in args if a in GLOBAL_FLAGS]
    return flags + [a for a in args if a not in GLOBAL_FLAGS]


def main() -> None:
    """Console entry point: user-facing errors are one line on stderr and a non-zero exit."""
    if sys.argv[1:] == ["--version"]:  # answered before the command tree is built
        print(f"agent {__version__}")
        return
    import typer

    from agent.cli.app import app
    from agent.cli.common import err_console

    try:
        code = app(args=global_flags_first(sys.argv[1:]), standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except AgentError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except sqlite3.DatabaseError as exc:  # a damaged gallery, cache or outbox file
        _error(f"database: {exc} (`agent doctor` says which file; `agent gallery repair` "
               "checks the gallery)")  # fmt: skip
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as exc:
        # Usage errors (bad option, missing argument) from typer's vendored click.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            err_console.print("aborted")
            sys.exit(1)
        raise


def _error(message: str) -> None:
    """One line on stderr; the message is text, not Rich markup (`[[sources]]` stays)."""
    from rich.markup import escape

    from agent.cli.common import err_console

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
