"""Class names, in id order: from the values of a label column, or from file names when the
data is one CSV per class. The names are saved in each checkpoint, so predict prints them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def class_names(values: Iterable[str]) -> list[str]:
    """The distinct labels in id order: integers by value (so 0/1 keep their meaning), any
    other labels alphabetically, as written (FAKE=0, REAL=1; fake=0, real=1)."""
    distinct = sorted(set(values))
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return distinct


def file_class(path: Path) -> str:
    """One CSV per class: the class is the file name's stem, lowercased (Fake.csv -> fake,
    True.csv -> true), so the names do not depend on how an archive tool cased them."""
    return path.stem.strip().lower()


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
