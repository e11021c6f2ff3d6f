"""`noor`: the command line. Thin: parse flags, call the packages, print results.

One module per command group; each registers its commands on `base.app` when imported, and `noor --help` lists
the groups in the order they are imported here (hence no sorting).
"""

from __future__ import annotations

import sys

import pydantic
import typer

# isort: off
from noor.cli import audit, cluster, concepts, generate, train, eval, models, keys, lora, perf, plan, serve  # noqa: F401
from noor.cli import simulate, tenants, verify, world  # noqa: F401

# isort: on
from noor.cli.base import BadInput, app

__all__ = ["BadInput", "app", "main"]


def main() -> None:
    """Entry point: user errors are one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False, prog_name="noor")  # the name users type, however it was started
    except BadInput as err:
        print(f"noor: error: {err}", file=sys.stderr)
        sys.exit(2)
    except pydantic.ValidationError as err:  # a bad NOOR_* setting
        first = err.errors()[0]
        name = "NOOR_" + str(first["loc"][0]).upper() if first["loc"] else err.title
        print(f"noor: error: {name}: {first['msg']}, got {first.get('input')!r}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        print("noor: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as err:  # typer's usage errors: bad option, bad value, missing argument
        show = getattr(err, "show", None)
        if type(err).__name__ == "NoArgsIsHelpError" and show is not None:
            show()
        else:
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            print(f"noor: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    if isinstance(code, int):
        sys.exit(code)
