"""Image-caption pairs listed in a CSV or JSONL file: ``path``, ``caption`` and an optional ``label``.

Image paths are relative to the captions file's folder (absolute paths are kept). Images are not opened
here: a missing or broken file shows up later in ``Batch.skipped``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vledge.data.base import ImageTextDataset
from vledge.errors import DataError

log = logging.getLogger(__name__)

CAPTIONS_SUFFIXES = (".csv", ".jsonl")
_FORMAT_HINT = "expected columns path,caption[,label] (CSV with a header row, or one JSON object per line)"


@dataclass(frozen=True)
class CaptionRow:
    path: str
    caption: str
    label: str | None


def _row(file: Path, line: int, path, caption, label) -> CaptionRow:
    where = f"{file}, line {line}"
    if not isinstance(path, str) or not path.strip():
        raise DataError(f"{where}: missing or empty 'path'; {_FORMAT_HINT}")
    if not isinstance(caption, str) or not caption.strip():
        raise DataError(f"{where}: missing or empty 'caption' for {path!r}; {_FORMAT_HINT}")
    if label is not None and not isinstance(label, str):
        raise DataError(f"{where}: 'label' must be a class name string, got {label!r}")
    return CaptionRow(path.strip(), caption.strip(), (label or "").strip() or None)


def _csv_rows(file: Path, text: str) -> Iterator[CaptionRow]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [name.strip() for name in reader.fieldnames or []]
    if "path" not in header or "caption" not in header:
        raise DataError(f"{file}, line 1: header must name 'path' and 'caption', found {header}; {_FORMAT_HINT}")
    reader.fieldnames = header
    try:
        for record in reader:
            if None in record:  # more cells than header columns
                raise DataError(f"{file}, line {reader.line_num}: {len(header) + len(record[None])} cells "
                                f"for {len(header)} header columns (quote captions that hold commas)")
            yield _row(file, reader.line_num, record.get("path"), record.get("caption"), record.get("label"))
    except csv.Error as exc:
        raise DataError(f"{file}, line {reader.line_num}: {exc}") from None


def _jsonl_rows(file: Path, text: str) -> Iterator[CaptionRow]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}, line {line_no}: invalid JSON ({exc.msg}); {_FORMAT_HINT}") from None
        if not isinstance(record, dict):
            raise DataError(f"{file}, line {line_no}: expected a JSON object, got {type(record).__name__}")
        yield _row(file, line_no, record.get("path"), record.get("caption"), record.get("label"))


def read_captions(file: str | os.PathLike) -> list[CaptionRow]:
    """Parse a ``.csv`` or ``.jsonl`` captions file; a malformed row raises DataError naming file and line."""
    file = Path(file)
    if file.suffix.lower() not in CAPTIONS_SUFFIXES:
        raise DataError(f"{file}: captions file must end in .csv or .jsonl")
    try:
        text = file.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a byte-order mark
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{file}, line {line}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read captions file {file}: {exc.strerror or exc}") from None
    if not text.strip():
        return []
    parse = _csv_rows if file.suffix.lower() == ".csv" else _jsonl_rows
    return list(parse(file, text))


class CaptionsDataset(ImageTextDataset):
    """Images with their own captions, from a captions file; labelled when every row names a class."""

    has_captions = True

    def __init__(self, file: str | os.PathLike):
        self.file = Path(file)
        rows = read_captions(self.file)
        if not rows:
            raise DataError(f"{self.file} lists no images; {_FORMAT_HINT}")
        root = self.file.parent
        self.paths = [str(root / row.path) for row in rows]
        self.captions = [row.caption for row in rows]
        labelled = sum(row.label is not None for row in rows)
        if labelled == len(rows):
            self.classes = sorted({row.label for row in rows})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = [index[row.label] for row in rows]
        else:
            if labelled:
                log.warning("%s: %d of %d rows have a label; treating the set as unlabelled",
                            self.file, labelled, len(rows))
            self.classes = None
            self.labels = [-1] * len(rows)
        self.name = root.name or str(root)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> str:
        return self.paths[i]

    def caption(self, i: int, variant: int = 0) -> str:
        return self.captions[i]

    def label(self, i: int) -> int:
        return self.labels[i]

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        return f"{self.name}: {len(self)} image-caption pairs from {self.file}, {kind}"
