"""The `vledge` command line: one module per command, heavy imports only inside the command that needs them."""

from __future__ import annotations

import argparse
import logging
import sys

from vledge import __version__
from vledge.errors import VledgeError

COMMANDS = ("train", "eval", "compress", "check", "run", "bench", "targets", "students", "watch", "annotate", "serve",
            "labels", "keygen", "sign", "verify")


def _parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="vledge", description="Compress vision-language models and run them on edge devices.")
    parser.add_argument("--version", action="version", version=f"vledge {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"vledge.cli.{name}_cmd")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:  # a program that calls main() keeps its own logging set-up
        # vledge's own progress at INFO; other libraries only warn (ONNX Runtime's quantizer logs a line
        # per tensor at INFO through the root logger).
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
        logging.getLogger("vledge").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except VledgeError as exc:
        print(f"vledge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused: a missing or unwritable place, a full disk
        print(f"vledge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vledge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
