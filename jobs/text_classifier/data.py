"""From CSV files in --data to padded id tensors: finding the files (or writing synthetic
ones), the validation split, the label mapping, the vocabulary, and the epoch order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.common.errors import DataError
from jobs.text_classifier.csvfile import (
    TRAIN_COLUMNS,
    clean_labels,
    label_ids,
    label_names,
    read_table,
)
from jobs.text_classifier.synthetic import GLOVE_NAME, write_synthetic
from jobs.text_classifier.text import PAD_ID, Vocab, document_tokens

VAL_NAMES = ("val.csv", "test.csv")
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


def find_train_file(data_dir: Path, train_file: str | None) -> Path:
    """--train-file (relative to --data unless absolute), else train.csv, else the first
    *.csv that is not a validation file."""
    if train_file is not None:
        path = Path(train_file)
        path = path if path.is_absolute() else data_dir / path
        if not path.is_file():
            raise DataError(f"--train-file {train_file}: {path} not found; check the name")
        return path
    if (data_dir / "train.csv").is_file():
        return data_dir / "train.csv"
    candidates = sorted(p for p in data_dir.glob("*.csv") if p.name.lower() not in VAL_NAMES)
    if not candidates:
        raise DataError(
            f"--data {data_dir}: no training *.csv found; put a CSV with title, text and "
            "label columns there (or pass --train-file) or use --synthetic N"
        )
    return candidates[0]


def load_text_data(
    train_path: Path,
    *,
    val_fraction: float,
    seed: int,
    min_freq: int,
    max_vocab: int,
    max_len: int,
) -> TextData:
    """Read, split, build the vocabulary from the training split only (so validation words
    count as unseen, as at prediction time), and encode both splits."""
    table = read_table(train_path, TRAIN_COLUMNS)
    names = label_names(clean_labels(table))
    if len(names) < 2:
        raise DataError(
            f"{train_path}: every row has label {names[0]!r}; a classifier needs at least "
            "two labels"
        )
    ids = label_ids(table, names)
    docs = [
        document_tokens(title, text)[:max_len]
        for title, text in zip(table.columns["title"], table.columns["text"], strict=True)
    ]
    val_path = _val_file(train_path)
    if val_path is not None:
        val_table = read_table(val_path, TRAIN_COLUMNS)
        train_docs, train_ids = docs, ids
        val_docs = [
            document_tokens(title, text)[:max_len]
            for title, text in zip(
                val_table.columns["title"], val_table.columns["text"], strict=True
            )
        ]
        val_ids = label_ids(val_table, names)
        source = f"{train_path} + {val_path.name} for validation"
    else:
        n_val = round(len(docs) * val_fraction)
        if n_val < 1 or len(docs) - n_val < 1:
            raise DataError(
                f"{train_path}: {len(docs)} rows cannot be split with --val-fraction "
                f"{val_fraction}; add rows, change --val-fraction or add a val.csv"
            )
        # Seeded, so every resume validates on the same rows.
        order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed))
        val_rows, train_rows = order[:n_val].tolist(), order[n_val:].tolist()
        train_docs, train_ids = [docs[i] for i in train_rows], [ids[i] for i in train_rows]
        val_docs, val_ids = [docs[i] for i in val_rows], [ids[i] for i in val_rows]
        source = f"{train_path} (validation split {val_fraction:g})"
    # Counted on the truncated documents: words only past --max-len never reach the model.
    vocab = Vocab.build(train_docs, min_freq=min_freq, max_size=max_vocab)
    return TextData(
        encode(train_docs, train_ids, vocab, max_len),
        encode(val_docs, val_ids, vocab, max_len),
        vocab,
        names,
        source,
    )


def encode(docs: list[list[str]], labels: list[int], vocab: Vocab, max_len: int) -> Encoded:
    tokens = torch.full((len(docs), max_len), PAD_ID, dtype=torch.int64)
    lengths = torch.empty(len(docs), dtype=torch.int64)
    for row, doc in enumerate(docs):
        ids = vocab.encode(doc, max_len)
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        lengths[row] = len(ids)
    return Encoded(tokens, lengths, torch.tensor(labels, dtype=torch.int64))


def _val_file(train_path: Path) -> Path | None:
    """val.csv or test.csv beside the training file, when it has a label column (Kaggle's
    test.csv often has none; then the split is used instead)."""
    for name in VAL_NAMES:
        path = train_path.with_name(name)
        if path.is_file() and path != train_path:
            if _has_label_column(path):
                return path
            print(f"note: {path} has no label column; splitting the training file", flush=True)
    return None


def _has_label_column(path: Path) -> bool:
    try:
        read_table(path, ("label",))
    except DataError as exc:
        if "missing column" in str(exc):
            return False
    return True


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch as a pure function of (seed, epoch): a resumed run can
    rebuild it and skip the batches already done, with no sampler state to save."""
    # Large odd multiplier keeps (seed, epoch) pairs from colliding, e.g. (0, 1) vs (1, 0).
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
