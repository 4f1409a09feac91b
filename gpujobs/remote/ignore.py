"""Which files of a user's code folder (`workdir:`) go to the node: everything but what
`.gitignore` files (at any depth, deeper ones overriding, as git reads them) and a
`.gpujobsignore` at the top leave out, and what never belongs on a node (.git, caches).

Matching is gitignore's own (pathspec's GitIgnoreSpec): `data/`, `*.pt`, `!keep.pt` mean what
they mean to git. A folder that is ignored is not walked at all, so a 50 GB `data/` costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

IGNORE_FILE = ".gpujobsignore"
# Never code: git's own store, interpreter caches, notebook autosaves, macOS folder files.
ALWAYS_IGNORED = (".git/", "__pycache__/", "*.pyc", ".ipynb_checkpoints/", ".DS_Store")


@dataclass(frozen=True)
class _Rules:
    prefix: str  # the folder the rules were found in, relative to the root ("" at the top)
    spec: pathspec.GitIgnoreSpec


class CodeFilter:
    """`skips(relative_path)`: True for a path the node does not get. A folder is asked with a
    trailing slash. `also` names more absolute paths to leave out (the runs folder, when it
    lies inside the code folder)."""

    def __init__(self, root: Path, also: Iterable[Path] = ()) -> None:
        self.root = root
        self.rules = [_Rules("", pathspec.GitIgnoreSpec.from_lines(ALWAYS_IGNORED))]
        top = root / IGNORE_FILE
        if top.is_file():
            self.rules.append(_Rules("", _read(top)))
        for folder, dirs, names in os.walk(root):
            here = Path(folder).relative_to(root).as_posix()
            here = "" if here == "." else here + "/"
            dirs[:] = [d for d in dirs if not self._ignored(here + d + "/")]
            if ".gitignore" in names:
                self.rules.append(_Rules(here, _read(Path(folder) / ".gitignore")))
        # Deeper rules come later, so they decide last (git's precedence).
        self.rules.sort(key=lambda rules: rules.prefix.count("/"))
        self.also = []
        for path in also:
            try:
                self.also.append(path.resolve().relative_to(root.resolve()).as_posix() + "/")
            except ValueError:
                continue  # not inside the code folder

    def skips(self, relative_path: str) -> bool:
        if any(relative_path.startswith(prefix) for prefix in self.also):
            return True
        parts = relative_path.rstrip("/").split("/")
        # A file inside an ignored folder is ignored, whatever a pattern says of the file.
        for depth in range(1, len(parts)):
            if self._ignored("/".join(parts[:depth]) + "/"):
                return True
        return self._ignored(relative_path)

    def _ignored(self, relative_path: str) -> bool:
        ignored = False
        for rules in self.rules:
            if not relative_path.startswith(rules.prefix):
                continue
            result = rules.spec.check_file(relative_path[len(rules.prefix) :])
            if result.include is not None:
                ignored = result.include
        return ignored


def _read(path: Path) -> pathspec.GitIgnoreSpec:
    text = path.read_text(encoding="utf-8", errors="replace")
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())
