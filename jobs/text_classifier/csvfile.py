"""Reading CSV files as Kaggle ships them, with the csv module: a UTF-8 byte-order mark,
quoted fields holding newlines, commas and quotes, articles longer than csv's default field
limit. A row that cannot be used is skipped and counted (SkippedRows), so one bad row among
tens of thousands does not end a run; a problem with the file as a whole (unreadable, empty,
a named column absent) is one DataError line naming the file. No torch here."""

from __future__ import annotations

import _csv
import csv
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from jobs.common.errors import DataError

# Real articles run to hundreds of kilobytes, past csv's default 128 KiB field limit (which
# raises "field larger than field limit"); the cap stays within a C long on every platform.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

LINES_SHOWN = 5  # of the skipped rows' line numbers, in the one note per file


@dataclass
class SkippedRows:
    """The rows of one file left out, counted by reason, with the line each starts on."""

    reasons: Counter[str] = field(default_factory=Counter)
    lines: list[int] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.reasons[reason] += 1
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.lines)

    def note(self, path: Path, rows: int) -> str | None:
        """One line for the log, e.g. "note: Fake.csv: skipped 3 of 900 rows (2 with no
        text, 1 with 3 fields where the header has 4; lines 7, 19, 40)"; None if none."""
        return f"note: {path}: {self.summary(rows)}" if self.lines else None

    def summary(self, rows: int) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
        first = sorted(self.lines)[:LINES_SHOWN]
        shown = ", ".join(map(str, first)) + (", ..." if len(self.lines) > len(first) else "")
        where = f"line {shown}" if len(self.lines) == 1 else f"lines {shown}"
        return f"skipped {len(self)} of {rows} rows ({reasons}; {where})"


@dataclass(frozen=True)
class Table:
    """The wanted columns of a CSV file by (lowercased) name, the line each kept row starts
    on, and what was skipped while parsing."""

    path: Path
    header: list[str]  # every column name in the file, lowercased
    columns: dict[str, list[str]]
    lines: list[int]
    rows: int  # records below the header, skipped ones included (blank lines are not records)
    skipped: SkippedRows

    def __len__(self) -> int:
        return len(self.lines)

    def note(self) -> str | None:
        return self.skipped.note(self.path, self.rows)


def read_header(path: Path) -> list[str]:
    """The column names (stripped, lowercased: columns are matched case-insensitively)."""
    with _open(path) as handle:
        return _header(path, csv.reader(handle))


def read_table(
    path: Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    hints: Mapping[str, str] | None = None,
) -> Table:
    """Read the named columns of a CSV with a header row (other columns are ignored); an
    optional column that is absent reads as empty strings. A required column that is absent
    is a DataError listing the columns present, followed by ``hints[column]`` when given."""
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = _header(path, reader)
        index: dict[str, int] = {}
        for column in (*required, *optional):
            if column in header:
                index[column] = header.index(column)
            elif column in required:
                raise missing_column(path, column, header, (hints or {}).get(column, ""))
        return _rows(path, reader, header, index, optional)


def missing_column(path: Path, column: str, header: Sequence[str], hint: str) -> DataError:
    found = ", ".join(name or "(unnamed)" for name in header)
    return DataError(
        f"{path}: no column {column!r} (columns: {found})" + (f"; {hint}" if hint else "")
    )


def _open(path: Path) -> TextIO:
    try:
        # utf-8-sig drops the byte-order mark spreadsheet exports put before the header;
        # newline="" lets csv handle newlines inside quoted fields.
        return path.open(encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _header(path: Path, reader: _csv.Reader) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: cannot parse the header ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(f"{path}: the file is empty; expected a header row naming its columns")
    return [cell.strip().lower() for cell in header]


def _rows(
    path: Path,
    reader: _csv.Reader,
    header: list[str],
    index: dict[str, int],
    optional: Sequence[str],
) -> Table:
    columns: dict[str, list[str]] = {column: [] for column in index}
    columns.update({column: [] for column in optional if column not in index})
    lines: list[int] = []
    skipped = SkippedRows()
    rows, width = 0, len(header)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            # The reader resumes at the next record, so one mangled row costs only itself.
            rows += 1
            skipped.add(start, "that csv cannot parse")
            start = reader.line_num + 1
            continue
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if row:  # csv yields [] for a blank line; skipping it is what people expect
            rows += 1
            if len(row) != width:
                # A field too many or too few shifts the columns: the label could be a word of
                # the text, so the row is dropped rather than guessed at.
                skipped.add(start, f"with {len(row)} fields where the header has {width}")
            elif [cell.strip().lower() for cell in row] == header:
                # Files concatenated with `cat` repeat the header; as data it would add a class.
                skipped.add(start, "repeating the header")
            else:
                for column, values in columns.items():
                    values.append(row[index[column]] if column in index else "")
                lines.append(start)
        start = reader.line_num + 1
    return Table(path, header, columns, lines, rows, skipped)
