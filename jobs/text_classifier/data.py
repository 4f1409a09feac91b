"""From CSV files in --data to padded id tensors: writing synthetic files when asked, the
validation split, the class ids, the vocabulary, and the epoch order. Which files are read
is layout.py's job, reading their rows examples.py's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.common.errors import DataError
from jobs.text_classifier.examples import read_examples
from jobs.text_classifier.labels import class_names
from jobs.text_classifier.layout import Layout
from jobs.text_classifier.synthetic import GLOVE_NAME, write_synthetic
from jobs.text_classifier.text import PAD_ID, Vocab

SYNTHETIC_DIR = "synthetic-data"


@dataclass(frozen=True)
class Encoded:
    tokens: torch.Tensor  # int64, N x max_len, right-padded with PAD_ID
    lengths: torch.Tensor  # int64, N, each >= 1; stays on the CPU (pack_padded wants it there)
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TextData:
    train: Encoded
    val: Encoded
    vocab: Vocab
    labels: list[str]  # class names in id order
    source: str  # human-readable origin, for the start-up line
    notes: tuple[str, ...] = ()  # files not used, rows skipped: printed once, before it


def prepare_synthetic(data_dir: Path, out_dir: Path, rows: int, seed: int) -> Path:
    """The folder holding the data for --synthetic: --data itself when it already holds a
    CSV (real data wins, and a resumed run reuses what it generated), otherwise the
    generated files are written there, or under --out when --data is not writable (e.g. a
    read-only dataset mount)."""
    for folder in (data_dir, out_dir / SYNTHETIC_DIR):
        if folder.is_dir() and any(folder.glob("*.csv")):
            return folder
    target = data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_synthetic(data_dir, rows, seed)
    except OSError:
        target = out_dir / SYNTHETIC_DIR
        write_synthetic(target, rows, seed)
    print(f"synthetic: wrote {rows} articles and GloVe vectors to {target}", flush=True)
    return target


def synthetic_glove(folder: Path) -> Path | None:
    path = folder / GLOVE_NAME
    return path if path.is_file() else None


def load_text_data(
    layout: Layout,
    *,
    text_columns: Sequence[str],
    val_fraction: float,
    seed: int,
    min_freq: int,
    max_vocab: int,
    max_len: int,
) -> TextData:
    """Read, split, build the vocabulary from the training split only (so validation words
    count as unseen, as at prediction time), and encode both splits."""
    examples = read_examples(
        layout.train, label_column=layout.label_column, text_columns=text_columns, max_len=max_len
    )
    names = class_names(examples.labels)
    if len(names) < 2:
        raise DataError(
            f"{layout.describe()}: every usable row is of class {names[0]!r}; a classifier "
            "needs at least two classes"
        )
    lookup = {name: i for i, name in enumerate(names)}
    docs, ids = examples.docs, [lookup[label] for label in examples.labels]
    notes = [*layout.notes, *examples.notes]
    if layout.val is not None:
        val = read_examples(
            [layout.val],
            label_column=layout.label_column,
            text_columns=text_columns,
            max_len=max_len,
            classes=lookup,
        )
        notes += val.notes
        train_docs, train_ids = docs, ids
        val_docs, val_ids = val.docs, [lookup[label] for label in val.labels]
        source = f"{layout.describe()} + {layout.val.name} for validation"
    else:
        n_val = round(len(docs) * val_fraction)
        if n_val < 1 or len(docs) - n_val < 1:
            raise DataError(
                f"{layout.describe()}: {len(docs)} usable rows cannot be split with "
                f"--val-fraction {val_fraction}; add rows, change --val-fraction or add a val.csv"
            )
        # Seeded, so every resume validates on the same rows.
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed))
        val_rows, train_rows = order[:n_val].tolist(), order[n_val:].tolist()
        train_docs, train_ids = [docs[i] for i in train_rows], [ids[i] for i in train_rows]
        val_docs, val_ids = [docs[i] for i in val_rows], [ids[i] for i in val_rows]
        source = f"{layout.describe()} (validation split {val_fraction:g})"
    # Counted on the truncated documents: words only past --max-len never reach the model.
    vocab = Vocab.build(train_docs, min_freq=min_freq, max_size=max_vocab)
    return TextData(
        encode(train_docs, train_ids, vocab, max_len),
        encode(val_docs, val_ids, vocab, max_len),
        vocab,
        names,
        source,
        tuple(notes),
    )


def class_counts(data: TextData) -> str:
    """Rows per class in each split, e.g. "fake (40 train, 10 val), true (38 train, 9 val)":
    the start-up line shows at a glance that every class file was read."""
    n = len(data.labels)
    train = torch.bincount(data.train.labels, minlength=n).tolist()
    val = torch.bincount(data.val.labels, minlength=n).tolist()
    return ", ".join(
        f"{name} ({t} train, {v} val)" for name, t, v in zip(data.labels, train, val, strict=True)
    )


def encode(docs: list[list[str]], labels: list[int], vocab: Vocab, max_len: int) -> Encoded:
    tokens = torch.full((len(docs), max_len), PAD_ID, dtype=torch.int64)
    lengths = torch.empty(len(docs), dtype=torch.int64)
    for row, doc in enumerate(docs):
        ids = vocab.encode(doc, max_len)
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        lengths[row] = len(ids)
    return Encoded(tokens, lengths, torch.tensor(labels, dtype=torch.int64))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch as a pure function of (seed, epoch): a resumed run can
    rebuild it and skip the batches already done, with no sampler state to save."""
    # Large odd multiplier keeps (seed, epoch) pairs from colliding, e.g. (0, 1) vs (1, 0).
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
