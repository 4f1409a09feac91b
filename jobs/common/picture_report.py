"""What a run left out of its pictures, over every folder it read: one warning line when the
run can go on, one error when it cannot (nothing usable, or more than --max-bad-fraction of
the picture files unreadable).

Hidden entries are listed but never count as bad: a folder copied from a Mac can hold a `._`
twin of every picture, and a share of those says nothing about the pictures themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common.errors import DataError
from jobs.common.picture_files import HIDDEN, PictureScan, Skipped

NAMES_SHOWN = 5  # enough to see the kind of problem; the rest is a count


@dataclass
class SkipReport:
    root: Path  # names are shown relative to it
    pictures: int = 0  # files with a picture suffix, hidden ones not included
    skipped: list[Skipped] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)

    def add_scan(self, scan: PictureScan) -> None:
        self.pictures += len(scan.pictures)
        self.skipped += scan.skipped
        self.others += scan.others

    def add_failed(self, failed: Iterable[Skipped]) -> None:
        self.skipped += failed

    @property
    def bad(self) -> list[Skipped]:
        return [entry for entry in self.skipped if entry.bad]

    def check(self, where: str, max_bad_fraction: float, hint: str) -> None:
        """Raise a one-line DataError when nothing is usable, or too much is bad. `where`
        names the folder (e.g. "--data /x"); `hint` says what to do when nothing is usable."""
        bad = self.bad
        if self.pictures == 0:
            raise DataError(f"{where}: no pictures found (png, jpg, ...){self._holds()}; {hint}")
        if len(bad) == self.pictures:
            raise DataError(
                f"{where}: no usable pictures: all {self.pictures} picture files are "
                f"unreadable: {self.names(bad)}{self._holds()}; {hint}"
            )
        share = len(bad) / self.pictures
        if share > max_bad_fraction:
            raise DataError(
                f"{where}: {len(bad)} of {self.pictures} picture files ({share:.0%}) are "
                f"unreadable, more than --max-bad-fraction {max_bad_fraction:g}: "
                f"{self.names(bad)}; fix or remove them, or raise --max-bad-fraction"
            )

    def warning(self, where: str) -> str | None:
        """The one line that names what was skipped, or None when nothing was."""
        if not self.skipped:
            return None
        hidden = self._hidden()
        unreadable = len(self.skipped) - hidden
        kinds = ", ".join(
            f"{count} {kind}"
            for count, kind in ((unreadable, "unreadable"), (hidden, "hidden"))
            if count
        )
        # Unreadable files first: they are the ones a person may want to fix.
        ordered = sorted(self.skipped, key=lambda entry: entry.reason == HIDDEN)
        considered = self.pictures + len(self.skipped) - len(self.bad)
        return (
            f"warning: {where}: skipped {len(self.skipped)} of {considered} files ({kinds}): "
            f"{self.names(ordered)}"
        )

    def names(self, entries: list[Skipped]) -> str:
        shown = ", ".join(f"{self._name(e)} ({e.reason})" for e in entries[:NAMES_SHOWN])
        more = len(entries) - NAMES_SHOWN
        return f"{shown} and {more} more" if more > 0 else shown

    def _name(self, entry: Skipped) -> str:
        try:
            name = entry.path.relative_to(self.root).as_posix()
        except ValueError:  # a file given by path (predict), not found below the root
            name = str(entry.path)
        return name + "/" if entry.folder else name

    def _holds(self) -> str:
        """What else the folders hold, e.g. "; it holds 12 .heic files and 2 hidden entries"."""
        suffixes = Counter(path.suffix.lower() or "no-suffix" for path in self.others)
        parts = [f"{count} {suffix}" for suffix, count in sorted(suffixes.items())]
        hidden = self._hidden()
        if hidden:
            parts.append(f"{hidden} hidden")
        return f" (other entries: {', '.join(parts)})" if parts else ""

    def _hidden(self) -> int:
        return sum(entry.reason == HIDDEN for entry in self.skipped)
