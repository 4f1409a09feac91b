"""GloVe text files (``word v1 ... vd`` per line) and the embedding matrix they seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.common.errors import DataError
from jobs.text_classifier.text import PAD_ID, SPECIALS, Vocab


@dataclass(frozen=True)
class Embeddings:
    weight: torch.Tensor  # float32, len(vocab) x dim
    found: int  # vocabulary words (specials excluded) that the file held
    words: int  # vocabulary words, specials excluded

    @property
    def coverage(self) -> float:
        return self.found / max(self.words, 1)


def read_glove(path: Path, vocab: Vocab) -> tuple[int, dict[int, list[float]]]:
    """(dimension, vocab id -> vector) for the vocabulary words in the file.

    Only vocabulary words are converted to floats: a 400k-word file then loads in seconds.
    The vector is the last `dim` fields, so the few 840B entries whose word contains a
    space still parse; a word2vec-style "count dim" first line is skipped.
    """
    dim = 0
    vectors: dict[int, list[float]] = {}
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.rstrip("\r\n").rstrip(" ").split(" ")
                if len(fields) < 2:
                    if line.strip():
                        raise DataError(f"{path}: line {line_no}: expected 'word v1 ... vd'")
                    continue
                if dim == 0:
                    if line_no == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                        continue
                    dim = len(fields) - 1
                elif len(fields) < dim + 1:
                    raise DataError(
                        f"{path}: line {line_no}: {len(fields) - 1} numbers where earlier "
                        f"lines have {dim}; is the file truncated?"
                    )
                word = " ".join(fields[:-dim])
                token_id = vocab.id(word)
                if (
                    word not in SPECIALS
                    and vocab.itos[token_id] == word
                    and (token_id not in vectors)
                ):
                    try:
                        vectors[token_id] = [float(f) for f in fields[-dim:]]
                    except ValueError:
                        raise DataError(
                            f"{path}: line {line_no}: a vector value is not a number"
                        ) from None
    except OSError as exc:
        raise DataError(f"--glove {path}: cannot read ({exc.strerror or exc})") from None
    if dim == 0:
        raise DataError(f"--glove {path}: the file holds no vectors")
    return dim, vectors


def glove_embeddings(path: Path, vocab: Vocab, generator: torch.Generator) -> Embeddings:
    """Rows from the file where it has the word; the rest random with the same spread as the
    file's vectors (so they neither dominate nor vanish next to them); <pad> zero."""
    dim, vectors = read_glove(path, vocab)
    weight = torch.empty(len(vocab), dim)
    if vectors:
        ids = torch.tensor(list(vectors), dtype=torch.long)
        known = torch.tensor(list(vectors.values()), dtype=torch.float32)
        std = float(known.std()) if known.numel() > 1 else 1.0
        weight.normal_(0.0, std or 1.0, generator=generator)
        weight[ids] = known
    else:
        weight.normal_(0.0, 1.0, generator=generator)
    weight[PAD_ID] = 0.0
    return Embeddings(weight, found=len(vectors), words=len(vocab) - len(SPECIALS))


def random_embeddings(vocab: Vocab, dim: int, generator: torch.Generator) -> Embeddings:
    """N(0, 1) like nn.Embedding's own init, <pad> zero."""
    weight = torch.randn(len(vocab), dim, generator=generator)
    weight[PAD_ID] = 0.0
    return Embeddings(weight, found=0, words=len(vocab) - len(SPECIALS))
