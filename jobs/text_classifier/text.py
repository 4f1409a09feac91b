"""Tokenizer and vocabulary: lowercase regex words, a document's columns joined in order,
ids with <pad>=0 and <unk>=1. Pure Python (no torch), so predict and the data loader share
it cheaply."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
SPECIALS = (PAD, UNK)
# The CSV columns a document is made of unless --text-columns says otherwise (and in
# checkpoints written before that flag existed).
DEFAULT_TEXT_COLUMNS = ("title", "text")
# Words with inner apostrophes or hyphens stay one token ("don't", "covid-19"): splitting them
# would give the embedding fragments that GloVe files do not hold.
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def document_tokens(*parts: str) -> list[str]:
    """The tokens of each part in turn (title, text: the headline first, so truncation to
    --max-len always keeps it)."""
    return [token for part in parts for token in tokenize(part)]


class Vocab:
    """Token list indexed by id; the list alone is saved in checkpoints."""

    def __init__(self, itos: Sequence[str]) -> None:
        self.itos = tuple(itos)
        self._stoi = {token: i for i, token in enumerate(self.itos)}

    @classmethod
    def build(cls, documents: Iterable[Sequence[str]], min_freq: int, max_size: int) -> Vocab:
        """Words seen at least min_freq times, most frequent first (ties alphabetical, so the
        ids are a pure function of the data), at most max_size entries including specials."""
        counts: Counter[str] = Counter()
        for tokens in documents:
            counts.update(tokens)
        ranked = sorted(
            (word for word, n in counts.items() if n >= min_freq and word not in SPECIALS),
            key=lambda word: (-counts[word], word),
        )
        return cls((*SPECIALS, *ranked[: max(max_size - len(SPECIALS), 0)]))

    def __len__(self) -> int:
        return len(self.itos)

    def id(self, token: str) -> int:
        return self._stoi.get(token, UNK_ID)

    def encode(self, tokens: Sequence[str], max_len: int) -> list[int]:
        """Ids of the first max_len tokens; an empty document becomes [<unk>] so that every
        sequence has length >= 1 (pack_padded_sequence refuses zero lengths)."""
        ids = [self.id(token) for token in tokens[:max_len]]
        return ids or [UNK_ID]
