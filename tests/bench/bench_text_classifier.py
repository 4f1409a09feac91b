"""Training throughput of text_classifier (lstm, batch 64, max_len 256) against a plain
hand-written PyTorch loop over the same model class with random token ids. Target on CPU:
workload >= 1.0x plain. Both time `steps` steps after `steps` warm-up steps.

    python tests/bench/bench_text_classifier.py [--device cpu] [--steps 10]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import torch
import torch.nn.functional as F

from jobs.common.metrics import read_metrics
from jobs.text_classifier.cli import main
from jobs.text_classifier.model import ModelConfig, build_model
from jobs.text_classifier.synthetic import write_synthetic

BATCH, MAX_LEN, EMBED_DIM, HIDDEN = 64, 256, 100, 128
# Close to the generated data's vocabulary, so both loops update embeddings of one size.
PLAIN_VOCAB = 800


def workload_samples_per_s(tmp: pathlib.Path, device: str, steps: int) -> float:
    """The real training loop: generated articles longer than MAX_LEN (so every batch is
    64 x 256, as in the plain loop), random embeddings of EMBED_DIM. The rate is the
    workload's own train_step metric over steps steps after `steps` warm-up steps, so data
    generation, loading, vocabulary and the final checkpoint are excluded."""
    data, out = tmp / "data", tmp / "out"
    rows = int(2 * steps * BATCH / 0.8) + BATCH  # one epoch holds every step: no validation
    write_synthetic(data, rows, seed=0, text_words=(300, 400))
    code = main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            "lstm",
            "--device",
            device,
            "--batch-size",
            str(BATCH),
            "--max-len",
            str(MAX_LEN),
            "--embed-dim",
            str(EMBED_DIM),
            "--hidden",
            str(HIDDEN),
            "--max-steps",
            str(2 * steps),
            "--log-every",
            str(steps),
            "--checkpoint-every-minutes",
            "10000",
        ]
    )
    if code != 0:
        raise RuntimeError(f"text_classifier exited {code}")
    rows_logged = [r for r in read_metrics(out) if r["split"] == "train_step"]
    return float(rows_logged[1]["samples_per_s"])  # the second interval: warm


def plain_samples_per_s(device: str, steps: int) -> float:
    """Same model class and recipe (AdamW, clipping), random ids of full length."""
    dev = torch.device(device)
    torch.manual_seed(0)
    config = ModelConfig("lstm", PLAIN_VOCAB, EMBED_DIM, 2, hidden=HIDDEN, dropout=0.2)
    model = build_model(config).to(dev).train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    tokens = torch.randint(2, PLAIN_VOCAB, (2 * steps, BATCH, MAX_LEN), device=dev)
    labels = torch.randint(0, 2, (2 * steps, BATCH), device=dev)
    lengths = torch.full((BATCH,), MAX_LEN, dtype=torch.int64)

    def step(i: int) -> None:
        loss = F.cross_entropy(model(tokens[i], lengths), labels[i])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    for i in range(steps):
        step(i)
    _sync(dev)
    start = time.perf_counter()
    for i in range(steps, 2 * steps):
        step(i)
    _sync(dev)
    return steps * BATCH / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    cli = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workload = workload_samples_per_s(pathlib.Path(folder), cli.device, cli.steps)
    plain = plain_samples_per_s(cli.device, cli.steps)
    print(
        f"workload {workload:.1f} samples/s, plain {plain:.1f} samples/s, "
        f"ratio {workload / plain:.2f}x"
    )
