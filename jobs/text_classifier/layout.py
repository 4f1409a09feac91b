"""Which CSV files in --data are read, and where each row's class comes from. Reads headers
only. The layouts, in order of precedence:

* ``--train-file NAME``, else ``train.csv`` (Kaggle's "fake-news" competition), else the only
  CSV: one file with a label column;
* several CSVs that all have the label column: concatenated, one training set;
* several CSVs none of which has a label column: one CSV per class, the class being the file
  name (Kaggle's "Fake and real news": Fake.csv -> fake, True.csv -> true).

With a label column, ``val.csv`` or ``test.csv`` beside the training file validates when it
has that column too. Every other CSV in the folder is named in a note, so none is ignored
silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs.common.errors import DataError
from jobs.text_classifier.csvfile import missing_column, read_header
from jobs.text_classifier.labels import file_class

TRAIN_NAME = "train.csv"
VAL_NAMES = ("val.csv", "test.csv")
DEFAULT_LABEL_COLUMN = "label"
LABEL_HINT = (
    "pass --label-column NAME to name the column holding the labels, or put one CSV per "
    "class in --data (e.g. Fake.csv and True.csv)"
)


@dataclass(frozen=True)
class Layout:
    folder: Path
    train: tuple[Path, ...]
    label_column: str | None  # None: one CSV per class, the class being the file name
    val: Path | None = None  # else a --val-fraction split of the training rows
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """Where the training rows come from, for the start-up line."""
        if self.label_column is None:
            pairs = ", ".join(f"{p.name} -> {file_class(p)}" for p in self.train)
            return f"{self.folder}: one CSV per class ({pairs})"
        if len(self.train) == 1:
            return str(self.train[0])
        names = " + ".join(p.name for p in self.train)
        return f"{self.folder}: {names}, column {self.label_column!r}"


def find_layout(data_dir: Path, train_file: str | None, label_column: str | None) -> Layout:
    """The files to read and how they are labelled; --label-column None means "label" when
    the files have it, else one CSV per class."""
    present = csv_files(data_dir)
    if train_file is not None:
        train = [_named_file(data_dir, train_file)]
    elif (named := _by_name(present, TRAIN_NAME)) is not None:
        train = [named]
    else:
        train = [p for p in present if p.name.lower() not in VAL_NAMES]
    if not train:
        raise DataError(
            f"--data {data_dir}: no training *.csv found; put a CSV with a label column "
            "there, or one CSV per class (e.g. Fake.csv and True.csv), or use --synthetic N"
        )
    column = label_column or DEFAULT_LABEL_COLUMN
    headers = {path: read_header(path) for path in train}
    lacking = [p for p in train if column not in headers[p]]
    notes: list[str] = []
    seen: set[Path] = set(train)
    if not lacking:
        val = _val_file(train[0], column, seen, notes)
        layout = Layout(train[0].parent, tuple(train), column, val)
    elif len(lacking) == len(train) > 1 and label_column is None:
        layout = Layout(data_dir, tuple(train), None)
    elif len(lacking) == len(train):
        raise missing_column(train[0], column, headers[train[0]], LABEL_HINT)
    else:
        having = [p for p in train if p not in lacking]
        raise DataError(
            f"--data {data_dir}: {_names(having)} with a {column!r} column, {_names(lacking)} "
            "without: for one CSV per class no file may have it, otherwise every file needs "
            "it (or pass --train-file NAME to use one file)"
        )
    if unused := [p for p in present if p not in seen]:
        why = (
            "every training CSV is a class; validation is a --val-fraction split"
            if layout.label_column is None
            else "pass --train-file NAME to train on another file"
        )
        notes.append(f"note: {data_dir}: not used: {_names(unused)} ({why})")
    return Layout(layout.folder, layout.train, layout.label_column, layout.val, tuple(notes))


def csv_files(folder: Path) -> list[Path]:
    """The *.csv files (any case) of a folder, by name. Hidden ones are left out: they are
    editors' and archivers' by-products (macOS "._Fake.csv"), not data."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _named_file(data_dir: Path, train_file: str) -> Path:
    path = Path(train_file)
    path = path if path.is_absolute() else data_dir / path
    if not path.is_file():
        raise DataError(f"--train-file {train_file}: {path} not found; check the name")
    return path


def _by_name(paths: list[Path], name: str) -> Path | None:
    """Kaggle archives unpacked on different systems differ in case (Train.csv)."""
    return next((p for p in paths if p.name.lower() == name and p.is_file()), None)


def _val_file(train: Path, column: str, seen: set[Path], notes: list[str]) -> Path | None:
    """val.csv or test.csv beside the training file, when it has the label column (Kaggle's
    test.csv often has none; then a split of the training rows validates). The files looked
    at are added to seen, as their note says why they are not used."""
    beside = csv_files(train.parent)
    for name in VAL_NAMES:
        path = _by_name(beside, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        if column in read_header(path):
            return path
        notes.append(
            f"note: {path} has no {column!r} column; validating on a split of the training rows"
        )
    return None


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths)
