"""Reading title/text/label CSV files with the csv module, reporting every problem as one
DataError line that names the file and, for a bad row, its line number. No torch here."""

from __future__ import annotations

import _csv
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.common.errors import DataError

# Real articles run to hundreds of kilobytes, past csv's default 128 KiB field limit;
# the cap stays within a C long on every platform.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

TRAIN_COLUMNS = ("title", "text", "label")


@dataclass(frozen=True)
class Table:
    """Columns of a CSV file by (lowercased) name, plus each row's first line number."""

    path: Path
    columns: dict[str, list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)


def read_table(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> Table:
    """Read the named columns of a CSV with a header row (names matched case-insensitively,
    other columns ignored); an optional column that is absent reads as empty strings."""
    try:
        # utf-8-sig drops the byte-order mark spreadsheet exports put before the header;
        # newline="" lets csv handle newlines inside quoted fields.
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            return _parse(path, csv.reader(handle), required, optional)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse(
    path: Path, reader: _csv.Reader, required: Sequence[str], optional: Sequence[str]
) -> Table:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: cannot parse the header ({exc})") from None
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(
            f"{path}: the file is empty; expected a header row with {', '.join(required)}"
        )
    names = [cell.strip().lower() for cell in header]
    index: dict[str, int] = {}
    for column in (*required, *optional):
        if column in names:
            index[column] = names.index(column)
        elif column in required:
            raise DataError(
                f"{path}: missing column {column!r} (found: {', '.join(names)}); "
                f"the header must name {', '.join(required)}"
            )
    columns: dict[str, list[str]] = {column: [] for column in (*required, *optional)}
    lines: list[int] = []
    width = len(names)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}: line {start}: cannot parse the row ({exc})") from None
        if row:  # csv yields [] for a blank line; skipping it is what people expect
            if len(row) != width:
                raise DataError(
                    f"{path}: line {start}: {len(row)} fields where the header has {width}; "
                    "quote fields that contain commas or newlines"
                )
            for column in columns:
                columns[column].append(row[index[column]] if column in index else "")
            lines.append(start)
        start = reader.line_num + 1
    if not lines:
        raise DataError(f"{path}: no data rows below the header")
    return Table(path, columns, lines)


def label_names(labels: Sequence[str]) -> list[str]:
    """Class names in id order: integer labels by value (so 0/1 keep their meaning), other
    labels alphabetically (FAKE=0, REAL=1)."""
    distinct = sorted(set(labels))
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return distinct


def label_ids(table: Table, names: Sequence[str]) -> list[int]:
    """Each row's label as an id in names; an empty or unknown label names its line."""
    lookup = {name: i for i, name in enumerate(names)}
    ids = []
    for raw, line in zip(table.columns["label"], table.lines, strict=True):
        label = raw.strip()
        if label not in lookup:
            what = "an empty label" if not label else f"label {label!r}"
            raise DataError(
                f"{table.path}: line {line}: {what} is not one of the training labels "
                f"({', '.join(names)})"
            )
        ids.append(lookup[label])
    return ids


def clean_labels(table: Table) -> list[str]:
    """Stripped labels; an empty one is an error naming its line."""
    labels = [raw.strip() for raw in table.columns["label"]]
    for label, line in zip(labels, table.lines, strict=True):
        if not label:
            raise DataError(f"{table.path}: line {line}: empty label")
    return labels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
