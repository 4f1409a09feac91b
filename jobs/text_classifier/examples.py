"""From CSV files to examples: each row's text columns joined in order into one document
(tokens, at most --max-len) and its class name, taken from the label column or, for one
CSV per class, from the file name. Rows with no words or no label are skipped and counted
with the rows the parser skipped; each file's count is one note. No torch here."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common.errors import DataError, UsageError
from jobs.text_classifier.csvfile import SkippedRows, Table, read_table
from jobs.text_classifier.labels import file_class
from jobs.text_classifier.layout import LABEL_HINT
from jobs.text_classifier.text import document_tokens

TEXT_HINT = "pass --text-columns NAME[,NAME...] naming the columns that hold the text"


@dataclass
class Examples:
    docs: list[list[str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # class names, as written in the data
    notes: list[str] = field(default_factory=list)  # one per file with skipped rows

    def __len__(self) -> int:
        return len(self.labels)


def read_examples(
    paths: Sequence[Path],
    *,
    label_column: str | None,
    text_columns: Sequence[str],
    max_len: int,
    classes: Collection[str] | None = None,
) -> Examples:
    """The examples of every file, in file then row order. label_column None: one CSV per
    class. classes (for validation files): rows with another label are skipped."""
    if label_column is not None and label_column in text_columns:
        raise UsageError(
            f"--text-columns {','.join(text_columns)} includes the label column "
            f"{label_column!r}; the model would read the answer"
        )
    examples = Examples()
    for path in paths:
        hints = dict.fromkeys(text_columns, TEXT_HINT)
        required = list(text_columns)
        if label_column is not None:
            hints[label_column] = LABEL_HINT
            required.append(label_column)
        table = read_table(path, required, hints=hints)
        kept = _add_rows(examples, table, label_column, text_columns, max_len, classes)
        if kept == 0:
            what = "rows" if label_column is not None else f"rows for class {file_class(path)!r}"
            raise DataError(f"{path}: no usable {what}: {_summary(table)}")
        if note := table.note():
            examples.notes.append(note)
    return examples


def _add_rows(
    examples: Examples,
    table: Table,
    label_column: str | None,
    text_columns: Sequence[str],
    max_len: int,
    classes: Collection[str] | None,
) -> int:
    """Append the usable rows of a table; returns how many; the others go to table.skipped."""
    if label_column is None:
        labels = [file_class(table.path)] * len(table)
    else:
        labels = [raw.strip() for raw in table.columns[label_column]]
    skipped: SkippedRows = table.skipped
    kept = 0
    for row, (line, label) in enumerate(zip(table.lines, labels, strict=True)):
        # Tokens, not characters: a cell of spaces or punctuation gives the model nothing.
        tokens = document_tokens(*(table.columns[column][row] for column in text_columns))
        if not tokens:
            skipped.add(line, "with no text")
        elif not label:
            skipped.add(line, "with no label")
        elif classes is not None and label not in classes:
            skipped.add(line, "with a label the training data does not have")
        else:
            examples.docs.append(tokens[:max_len])
            examples.labels.append(label)
            kept += 1
    return kept


def _summary(table: Table) -> str:
    if table.rows == 0:
        return "no data rows below the header"
    return table.skipped.summary(table.rows)
