"""The class names and prompt templates ``vledge eval`` is given: files or inline values, read and checked.

Templates take the class name at ``{}``; CLIP_benchmark's and open_clip's ``{c}`` is read as ``{}`` so that
their template lists can be used as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from vledge.errors import ConfigError, DataError
from vledge.text import check_template

_CLIP_BENCHMARK_HOLE = "{c}"


def _lines(path: Path, what: str) -> list:
    """A JSON file's value, or a text file's non-empty lines (``#`` starts a comment line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the {what} file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); give a JSON list of {what}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_templates(values: Sequence[str]) -> list[str]:
    """Templates from ``values``: each a file (one template a line, or a JSON list) or a template itself
    (it holds ``{}`` or ``{c}``). Duplicates are kept once, in their first place."""
    templates: list = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_file():
            found = _lines(path, "templates")
            if not isinstance(found, list) or not found:
                raise DataError(f"{path} holds no templates; give one a line, e.g. 'a photo of a {{}}.'")
            templates += found
        elif "{}" in value or _CLIP_BENCHMARK_HOLE in value:
            templates.append(value)
        else:
            raise ConfigError(f"--templates {value!r:.80} is neither a file nor a template: a template holds {{}} "
                              "where the class name goes, e.g. --templates 'a photo of a {}.'")
    out = []
    for template in templates:
        if not isinstance(template, str):
            raise DataError(f"templates must be strings, got {type(template).__name__}: {template!r:.80}")
        template = template.replace(_CLIP_BENCHMARK_HOLE, "{}")
        check_template(template)
        if template not in out:
            out.append(template)
    return out


def read_classes(path: str, data_classes: Sequence[str] | None) -> list[str]:
    """The names to prompt with, one per class of the data set, in its class order.

    ``path``: a text file (one name a line) or a JSON list, both in the data set's class order, or a JSON
    object mapping each of the data set's class names (folder names, CSV labels) to the name to prompt with.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"--classes file not found: {file}; give a file with one class name a line")
    found = _lines(file, "class names")
    if not data_classes:
        raise ConfigError(f"--classes {file} names classes, but the data set is unlabelled; zero-shot accuracy "
                          "needs labels (an image folder's subfolders, or a captions file's label column)")
    if isinstance(found, dict):
        missing = [name for name in data_classes if name not in found]
        if missing:
            raise DataError(f"{file} maps no name for the data set's classes {missing[:5]}; map every class")
        found = [found[name] for name in data_classes]
    if not isinstance(found, list) or not all(isinstance(name, str) and name.strip() for name in found):
        raise DataError(f"{file} must list class names as non-empty strings, one a line or as a JSON list")
    names = [name.strip() for name in found]
    if len(names) != len(data_classes):
        raise DataError(f"{file} lists {len(names)} class names; the data set has {len(data_classes)} classes "
                        f"(in this order: {', '.join(data_classes[:5])}{', ...' if len(data_classes) > 5 else ''}); "
                        "give one name per class, in that order, or a JSON object mapping each class to its name")
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{file} names {repeated[:5]} more than once; each class needs its own name")
    return names
