"""Flags every command shares, spelled once: verbosity and log file (accepted before or after the
command), ``--json``, ``--device``/``--strict``, ``--labels``, and the help layout (examples, defaults)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vledge.errors import ConfigError


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrap, examples (text with line breaks) keep them; every flag with a default shows it,
    unless its help already says."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text or "%(default)" in text:
            return text
        if action.nargs == 0:  # a switch (store_true/store_false): its default is its absence
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


def global_options() -> argparse.ArgumentParser:
    """``-v``, ``-q`` and ``--log-file``, as a parent of the main parser and of every command's, so they work
    on either side of the command name. Defaults are suppressed so a command's parser never overwrites
    a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="verbose",
                       default=argparse.SUPPRESS, help="also debug lines (every epoch, every stage's details)")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet",
                       default=argparse.SUPPRESS, help="only warnings and errors")
    group.add_argument("--log-file", metavar="PATH", default=argparse.SUPPRESS,
                       help="also write every log line, debug included, to this file")
    return common


def add_json_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--json`` alone prints ``what`` as JSON on stdout instead of the text; ``--json PATH`` writes it there
    and keeps the text. Put it after the positional arguments (or write ``--json=PATH``)."""
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help=f"{what} as JSON: on stdout with no PATH (instead of the text), else written to PATH")


def json_on_stdout(args) -> bool:
    return getattr(args, "json", None) == "-"


def check_json_destination(args) -> None:
    """Refuse an unwritable ``--json PATH`` before the work starts."""
    from vledge.output import check_writable

    if args.json not in (None, "-"):
        check_writable(Path(args.json).resolve().parent, "--json")


def emit_json(args, data) -> None:
    """Print ``data`` on stdout (``--json``) or write it to the file (``--json PATH``); nothing without the flag."""
    from vledge.output import write_json

    if args.json == "-":
        json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
    elif args.json is not None:
        write_json(args.json, data, "--json")


def add_device_flags(p: argparse.ArgumentParser, *, from_environment: bool = False) -> None:
    """``--device`` and ``--strict``. ``from_environment`` (serve): both default to None, so the service's
    ``VLEDGE_DEVICE``/``VLEDGE_STRICT`` or its own defaults decide when the flag is absent."""
    p.add_argument("--device", default=None if from_environment else "auto",
                   help="where to run: auto, cpu, cuda, tensorrt, GPU, NPU (OpenVINO) ...; auto takes the first "
                        "the bundle's target can reach" + (" (default: auto)" if from_environment else ""))
    p.add_argument("--strict", action="store_true", default=None if from_environment else False,
                   help="exit with an error (code 2) when the device cannot run the bundle, instead of warning and "
                        "falling back (to the CPU, a fallback file or the next placement)")


LABELS_HELP = ("labels: a comma list ('a cat,a dog'), or a file: @FILE or the path of an existing file "
               "(.txt one label a line, .json a list of strings)")


def parse_labels(text: str | None) -> list[str] | None:
    """``--labels`` in every command: ``"a cat, a dog"``, ``@labels.txt``, or ``labels.txt`` when that file
    exists. None stays None."""
    if text is None:
        return None
    path = text[1:] if text.startswith("@") else text if Path(text).is_file() else None
    if path is None:
        labels = [item.strip() for item in text.split(",") if item.strip()]
        where = f"--labels {text!r}"
    else:
        labels, where = _read_label_file(path), f"labels file {path}"
    if not labels:
        raise ConfigError(f"{where} holds no labels; give a comma list ('a cat,a dog') or a file with one a line")
    return labels


def _read_label_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"labels file {path} is not UTF-8 text") from None
    if not path.lower().endswith(".json"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"labels file {path} is not valid JSON: {exc}") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"labels file {path} must hold a JSON list of strings")
    return [label.strip() for label in labels if label.strip()]


def _points(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of top-1 points, e.g. 2, got {text!r}") from None
    if not 0 <= value < 100:  # 100 points would pass any bundle: the gate takes a fraction under 1
        raise argparse.ArgumentTypeError(f"top-1 points go from 0 up to (not including) 100, got {value:g}")
    return value


def add_tolerance_flag(p: argparse.ArgumentParser, *, default_points: float | None) -> None:
    """``--tolerance`` in top-1 points, the unit every report prints (2 points = a fraction of 0.02)."""
    default = "" if default_points is not None else " (default: the recipe's, 2)"
    p.add_argument("--tolerance", type=_points, default=default_points, metavar="POINTS",
                   help=f"top-1 points the bundle may lose against the teacher, as reports print them: 2 means "
                        f"0.90 -> 0.88 passes{default}")


def tolerance_fraction(points: float | None) -> float | None:
    """Points on the command line -> the fraction ``CompressConfig.tolerance`` and ``verify_bundle`` take."""
    return None if points is None else points / 100
