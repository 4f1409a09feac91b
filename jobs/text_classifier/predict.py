"""``predict``: classify articles with a checkpoint, printing LABEL<TAB>CONFIDENCE lines."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.device import select_device
from jobs.common.errors import DataError, UsageError
from jobs.text_classifier.csvfile import read_table
from jobs.text_classifier.data import encode
from jobs.text_classifier.model import ModelConfig, build_model
from jobs.text_classifier.text import DEFAULT_TEXT_COLUMNS, Vocab, document_tokens


def predict(args: argparse.Namespace) -> int:
    path = _checkpoint_file(args.checkpoint)
    try:
        state = load_checkpoint(path)
        extra = state["extra"]
        config = ModelConfig.from_plain(extra["model_config"])
        vocab, labels, max_len = Vocab(extra["vocab"]), list(extra["labels"]), extra["max_len"]
        columns = list(extra.get("text_columns", DEFAULT_TEXT_COLUMNS))
    except (KeyError, TypeError) as exc:
        raise DataError(f"--checkpoint {path}: not a text_classifier checkpoint ({exc})") from None
    except Exception as exc:  # unpickling/IO failures: a damaged or foreign file
        raise DataError(f"--checkpoint {path}: cannot load ({exc})") from None
    device = select_device(args.device)
    model = build_model(config)
    model.load_state_dict(state["models"]["model"])
    model.to(device).eval()

    if args.csv is not None:
        docs = [tokens[:max_len] for tokens in _csv_documents(args.csv, columns)]
    else:
        docs = [document_tokens(args.title, args.text)[:max_len]]
    encoded = encode(docs, [0] * len(docs), vocab, max_len)
    with torch.inference_mode():
        for first in range(0, len(docs), args.batch_size):
            lengths = encoded.lengths[first : first + args.batch_size]
            tokens = encoded.tokens[first : first + args.batch_size, : int(lengths.max())]
            probs = torch.softmax(model(tokens.to(device), lengths).float(), dim=1).cpu()
            confidence, ids = probs.max(dim=1)
            for label_id, p in zip(ids.tolist(), confidence.tolist(), strict=True):
                print(f"{labels[label_id]}\t{p:.4f}", flush=False)
    return 0


def _csv_documents(path: Path, columns: list[str]) -> list[list[str]]:
    """The tokens of each row of --csv, from the columns the model was trained on. Every row
    must parse: one output line per input row is the contract, so none may be skipped."""
    # A headline column may be missing (as predict has always allowed): its text is enough.
    optional = ["title"] if "title" in columns and len(columns) > 1 else []
    hint = f"the checkpoint's model reads columns {','.join(columns)}"
    table = read_table(
        path,
        [column for column in columns if column not in optional],
        optional,
        hints=dict.fromkeys(columns, hint),
    )
    if table.skipped:
        raise DataError(
            f"--csv {path}: {table.skipped.summary(table.rows)}; fix those rows, as each "
            "output line must match an input row"
        )
    return [
        document_tokens(*(table.columns[column][row] for column in columns))
        for row in range(len(table))
    ]


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise UsageError(f"--checkpoint {path}: no ckpt-*.pt in this directory")
        return newest
    return path
