"""Training throughput of the transfer workload beside a plain hand-written PyTorch loop:
resnet18, batch 32, fine-tune stage (everything trains), 64 px on CPU and 224 px on CUDA.
Target: workload >= 1.0x plain (no per-step syncs or Python overhead of note).

    python tests/bench/bench_transfer.py [--device cpu] [--steps 20] [--rounds 2]

Both figures exclude warm-up: each loop runs `steps` untimed steps first, then `steps` timed
ones. These machines are shared and noisy: compare the two figures of one run, alternated.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jobs.common.metrics import read_metrics  # noqa: E402
from jobs.transfer.cli import main as transfer_main  # noqa: E402
from jobs.transfer.models import build_model  # noqa: E402

BATCH = 32
ARCH = "resnet18"
VAL_FRACTION = 0.05  # validation never runs here: the bench stops mid-epoch


def image_size(device: str) -> int:
    return 224 if device == "cuda" else 64


def workload_samples_per_s(tmp: Path, device: str, steps: int) -> float:
    """The real `python -m jobs.transfer` training (in process) for 2 x `steps` steps on
    generated shapes; returns the samples/s it logged for the second `steps`, i.e. its own
    training-loop measurement, after data generation, loading and warm-up."""
    # One epoch must hold every step, so no validation pass lands inside the timing.
    count = math.ceil(2 * steps * BATCH / (1 - VAL_FRACTION)) + 2
    out = tmp / f"out-{time.monotonic_ns()}"
    code = transfer_main(
        [
            "--data",
            str(tmp / f"shapes-{count}"),
            "--out",
            str(out),
            "--synthetic",
            str(count),
            "--arch",
            ARCH,
            "--batch-size",
            str(BATCH),
            "--image-size",
            str(image_size(device)),
            "--device",
            device,
            "--frozen-epochs",
            "0",
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--val-fraction",
            str(VAL_FRACTION),
            "--max-steps",
            str(2 * steps),
            "--log-every",
            str(steps),
            "--checkpoint-every-minutes",
            "1000",
            "--keep",
            "1",
        ]
    )
    if code != 0:
        raise RuntimeError(f"jobs.transfer exited {code}")
    rows = [r for r in read_metrics(out) if r["split"] == "train_step"]
    return float(rows[1]["samples_per_s"])


def plain_samples_per_s(device: str, steps: int) -> float:
    """A plain loop: same model class, batch and size, SGD momentum 0.9, random tensors."""
    dev = torch.device(device)
    size = image_size(device)
    torch.manual_seed(0)
    model = build_model(ARCH, 2).to(dev).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(BATCH, 3, size, size, device=dev)
    y = torch.randint(0, 2, (BATCH,), device=dev)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(steps):
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return steps * BATCH / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    plain: list[float] = []
    workload: list[float] = []
    with tempfile.TemporaryDirectory() as temp:
        for _ in range(args.rounds):  # alternate, so drifting machine load hits both alike
            plain.append(plain_samples_per_s(args.device, args.steps))
            workload.append(workload_samples_per_s(Path(temp), args.device, args.steps))
    p, w = statistics.median(plain), statistics.median(workload)
    print(f"plain    {p:8.1f} samples/s  {[round(v, 1) for v in plain]}")
    print(f"workload {w:8.1f} samples/s  {[round(v, 1) for v in workload]}")
    print(f"workload / plain = {w / p:.3f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
