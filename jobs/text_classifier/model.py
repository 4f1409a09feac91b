"""The two classifiers: embedding -> (bi)LSTM -> pooling -> linear, and a mean EmbeddingBag
-> linear. Both take (tokens B x T right-padded with id 0, lengths B on the CPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jobs.text_classifier.text import PAD_ID

MODELS = ("lstm", "bag")
POOLS = ("max", "mean", "last")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model, saved in checkpoints for predict."""

    kind: str
    vocab_size: int
    embed_dim: int
    num_classes: int
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = True
    pool: str = "max"
    dropout: float = 0.0

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> ModelConfig:
        return cls(**plain)


class LstmClassifier(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pool = config.pool
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(
            config.hidden * (2 if config.bidirectional else 1), config.num_classes
        )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(tokens))
        # Packing makes the LSTM stop at each sequence's end: padding never enters the
        # state, and the backward direction starts at the last real token.
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        output, (hidden, _) = self.lstm(packed)
        if self.pool == "last":
            # hidden is (layers * directions) x B x H, back in input order; take the top
            # layer's final state of each direction.
            directions = 2 if self.lstm.bidirectional else 1
            features = torch.cat(list(hidden[-directions:]), dim=1)
        else:
            padded, _ = pad_packed_sequence(output, batch_first=True)  # zeros past each end
            if self.pool == "mean":
                features = padded.sum(1) / lengths.to(padded.device, padded.dtype)[:, None]
            else:
                steps = torch.arange(padded.shape[1], device=padded.device)
                pad = steps[None, :] >= lengths.to(padded.device)[:, None]
                features = padded.masked_fill(pad[:, :, None], float("-inf")).amax(1)
        return self.head(self.dropout(features))


class BagClassifier(nn.Module):
    """Mean of the word embeddings (padding excluded) and a linear layer: a fast baseline."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(
            config.vocab_size, config.embed_dim, mode="mean", padding_idx=PAD_ID
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.embed_dim, config.num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        del lengths  # padding_idx already keeps the pads out of the mean
        return self.head(self.dropout(self.embedding(tokens)))


def build_model(
    config: ModelConfig, embedding: torch.Tensor | None = None, freeze_embeddings: bool = False
) -> nn.Module:
    if config.kind not in MODELS:
        raise ValueError(f"unknown model {config.kind!r}; expected one of {MODELS}")
    if config.pool not in POOLS:
        raise ValueError(f"unknown pooling {config.pool!r}; expected one of {POOLS}")
    model: nn.Module = (LstmClassifier if config.kind == "lstm" else BagClassifier)(config)
    if embedding is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(embedding)
    model.embedding.weight.requires_grad_(not freeze_embeddings)
    return model
