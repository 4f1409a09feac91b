"""Training throughput of the dcgan workload beside a plain hand-written PyTorch DCGAN loop
(same Generator/Discriminator classes, batch 64, 64 px, the standard D-then-G step on random
tensors). Target: workload >= 1.0x plain. These machines are shared and noisy: the two are run
alternately and the best of each is reported.

    python tests/bench/bench_dcgan.py [--device cpu] [--steps 20] [--rounds 2] [--threads T]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs.common.metrics import read_metrics
from jobs.dcgan.cli import main as dcgan_main
from jobs.dcgan.model import Discriminator, Generator

BATCH, SIZE, NZ = 64, 64, 100


def workload_samples_per_s(tmp: Path, device: str, steps: int) -> float:
    """Run the real `python -m jobs.dcgan` code in-process for `steps` steps on generated
    pictures and return the samples/s it measured over its own training loop (its metrics
    row at the last step: data generation and loading happen before that clock starts)."""
    out = tmp / "out"
    argv = [
        "--data", str(tmp / "data"),
        "--out", str(out),
        "--synthetic", str(BATCH * (steps + 1)),  # one epoch covers every step
        "--batch-size", str(BATCH),
        "--image-size", str(SIZE),
        "--max-steps", str(steps),
        "--log-every", str(steps),
        "--device", device,
        "--resume",
        # The plain loop's recipe (the paper's), so both do the same work per step. (The
        # defaults' DiffAugment and spectral norm, in place of D's BatchNorm, measured within
        # this machine's noise of it per step: -15% to +5%.)
        "--augment", "none", "--no-spectral-norm", "--label-smoothing", "0", "--lr-d", "2e-4",
    ]  # fmt: skip
    if dcgan_main(argv) != 0:
        raise RuntimeError("dcgan run failed; see its output above")
    rows = [r for r in read_metrics(out) if r["split"] == "train_step" and r["step"] == steps]
    return float(rows[-1]["samples_per_s"])


def plain_samples_per_s(device: str, steps: int) -> float:
    """The textbook loop (as in the PyTorch DCGAN example): D on real, D on detached fake,
    step D; D on fake, step G. Random tensors as data."""
    dev = torch.device(device)
    torch.manual_seed(0)
    net_g, net_d = Generator(NZ, 64, SIZE).to(dev), Discriminator(64, SIZE).to(dev)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(BATCH, 3, SIZE, SIZE, device=dev) * 2 - 1
    ones = torch.ones(BATCH, device=dev)
    zeros = torch.zeros(BATCH, device=dev)
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        net_d.zero_grad()
        loss_real = F.binary_cross_entropy_with_logits(net_d(real), ones)
        loss_real.backward()
        fake = net_g(torch.randn(BATCH, NZ, device=dev))
        loss_fake = F.binary_cross_entropy_with_logits(net_d(fake.detach()), zeros)
        loss_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        loss_g = F.binary_cross_entropy_with_logits(net_d(fake), ones)
        loss_g.backward()
        opt_g.step()
    _sync(dev)
    return BATCH * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the workload inherits it (no --threads passed)
    workload, plain = [], []
    for round_index in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            workload.append(workload_samples_per_s(Path(tmp), args.device, args.steps))
        plain.append(plain_samples_per_s(args.device, args.steps))
        print(f"round {round_index + 1}: workload {workload[-1]:.1f}, plain {plain[-1]:.1f}")
    best_w, best_p = max(workload), max(plain)
    print(
        f"dcgan {args.device} batch {BATCH} {SIZE}px, {args.steps} steps: workload "
        f"{best_w:.1f} samples/s, plain {best_p:.1f} samples/s, ratio {best_w / best_p:.2f} "
        "(target >= 1.0)"
    )


if __name__ == "__main__":
    main()
