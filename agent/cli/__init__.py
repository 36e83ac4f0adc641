"""The `agent` command line: `main` is the console script; the commands live in `app`."""

from __future__ import annotations

import sqlite3
import sys

from agent import __version__
from agent.errors import AgentError


def main() -> None:
    """Console entry point: user-facing errors are one line on stderr and a non-zero exit."""
    if sys.argv[1:] == ["--version"]:  # answered before the command tree is built
        print(f"agent {__version__}")
        return
    import typer

    from agent.cli.app import app
    from agent.cli.common import err_console

    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as a return value here
        if isinstance(code, int) and code:
            sys.exit(code)
    except AgentError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except sqlite3.DatabaseError as exc:  # a damaged gallery, cache or outbox file
        err_console.print(f"[bold red]error:[/] database: {exc} (`agent doctor` says which file; "
                          "`agent gallery repair` checks the gallery)", highlight=False,
                          soft_wrap=True)  # fmt: skip
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
