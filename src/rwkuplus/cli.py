"""The ``rwkuplus`` command line.

Each subcommand lives in its own module under ``rwkuplus.commands`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are found there automatically.
A UserError ends the command with its one-sentence message and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from . import __version__, commands, progress
from .errors import UserError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like a UserError (subcommand parsers inherit it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help').\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rwkuplus",
        description=(
            "RWKU+: run the RWKU unlearning benchmark and measure the hidden costs of counterfactual "
            "tuning (knowledge conflict, hallucination spillover). With no command, shows this help; "
            "start with 'rwkuplus run'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rwkuplus {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console shows warnings; a run's INFO lines go to run.log
        if type(handler) is logging.StreamHandler:
            handler.setLevel(level)
    for noisy in ("transformers", "accelerate", "peft", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"rwkuplus {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rwkuplus {args.command}: interrupted; finished work is saved, rerun the same command to resume.",
              file=sys.stderr)
        return 130
    finally:
        progress.close_all()  # a bar left open by an error stops its heartbeat lines


if __name__ == "__main__":
    sys.exit(main())
