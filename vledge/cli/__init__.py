"""The `vledge` command line: one module per command, heavy imports only inside the command that needs them."""

from __future__ import annotations

import argparse
import sys

from vledge import __version__
from vledge.errors import VledgeError

COMMANDS = ("train", "eval", "compress", "check", "run", "bench", "targets", "students", "watch", "annotate", "serve",
            "labels", "keygen", "sign", "verify")


class _Commands:
    """What each command module's ``add_parser(sub)`` receives: subparsers that all get the shared flags,
    the help layout and their examples."""

    def __init__(self, sub, common: argparse.ArgumentParser):
        self.sub, self.common = sub, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        from vledge.cli.examples import EXAMPLES
        from vledge.cli.options import HelpFormatter

        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", "examples:\n" + EXAMPLES[name])
        kwargs["parents"] = [self.common, *kwargs.get("parents", ())]
        return self.sub.add_parser(name, **kwargs)


def _parser() -> argparse.ArgumentParser:
    import importlib

    from vledge.cli.examples import OVERVIEW
    from vledge.cli.options import HelpFormatter, global_options

    common = global_options()
    parser = argparse.ArgumentParser(prog="vledge", parents=[common], formatter_class=HelpFormatter, epilog=OVERVIEW,
                                     description="Compress vision-language models and run them on edge devices.")
    parser.add_argument("--version", action="version", version=f"vledge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _Commands(sub, common)
    for name in COMMANDS:
        importlib.import_module(f"vledge.cli.{name}_cmd").add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``vledge`` command; returns its exit code (2 for any vledge error, with a one-line message)."""
    from vledge.spin_wait import prefer_passive_waits

    prefer_passive_waits()  # before any command imports torch
    args = _parser().parse_args(argv)
    try:
        from vledge.cli.logs import configure_logging

        configure_logging(getattr(args, "verbosity", None), getattr(args, "log_file", None))
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as exc:
        from vledge.cli.dependencies import missing_dependency

        error = missing_dependency(exc, args.command)
        if error is None:
            raise
        print(f"vledge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (VledgeError, OSError) as exc:  # OSError: a missing or unwritable place, a full disk
        print(f"vledge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vledge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
