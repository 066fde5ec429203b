"""The ``kaudit`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function; this
module only wires them together and turns kaudit's errors into one line each on stderr:
``error: <file>[:<line>:<col>]: <field path>: <message>``, exit 1 for bad input, exit 2 for bad
usage (one line naming the command and pointing at its --help). docs/cli.md is the contract.
Command modules import what a command uses (kaudit's own modules too, kopf) inside
its functions: building the parser imports every command module, and with those imports at module
level ``kaudit render`` took 1.5 times and ``kaudit --version`` 3 times the CPU time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, NoReturn, Sequence

from kaudit import __version__
from kaudit.errors import InvalidInput, KauditError, Refused

# Module names under kaudit.cli, in the order their commands appear in --help.
COMMAND_MODULES = ("render", "policy", "rules", "run", "install_policy")
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2

if TYPE_CHECKING:
    # What each command module's register() is given: the subcommands of the parser above it.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def usage_line(prog: str, message: str) -> str:
    return f"error: {prog}: {message} (see '{prog} --help')"


class Parser(argparse.ArgumentParser):
    """argparse with kaudit's usage errors: one line and exit 2, instead of a usage block.

    Subcommand parsers are made from the same class (argparse's default ``parser_class``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, usage_line(self.prog, message) + "\n")


def missing_command(parser: argparse.ArgumentParser, choices: str) -> int:
    print(usage_line(parser.prog, f"a command is required: {choices}"), file=sys.stderr)
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kaudit",
        description=(
            "Provision Kubernetes API-server audit log collection for the Datadog Agent. "
            "Run 'kaudit COMMAND --help' for the options of each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"kaudit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"kaudit.cli.{name}")
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != f"kaudit.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def report(errors: Sequence[object], prefix: str = "error") -> None:
    for error in errors:
        print(f"{prefix}: {error}" if prefix else str(error), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        return missing_command(parser, ", ".join(name.replace("_", "-") for name in COMMAND_MODULES))
    try:
        return int(args.func(args) or 0)
    except InvalidInput as exc:
        report(exc.errors)
        return EXIT_BAD_INPUT
    except Refused as exc:
        report([f"{exc.reason}: {exc.message}"])
        return EXIT_BAD_INPUT
    except KauditError as exc:
        report([exc])
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kaudit ... | head` closed the pipe; not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Exception as exc:  # pragma: no cover - last resort, never a traceback for users
        if os.environ.get("KAUDIT_DEBUG"):
            raise
        report([f"internal error: {type(exc).__name__}: {exc} (set KAUDIT_DEBUG=1 for a traceback)"])
        return 70
