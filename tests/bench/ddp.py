"""What running under torchrun costs and buys: mnist_cnn's epoch throughput (the whole group's
samples/s, from its metrics) as one process, and as a DDP group of N processes started the way a
gpujobs node starts them (`python -m torch.distributed.run --nnodes 1 --nproc-per-node N
--node-rank 0 --master-addr 127.0.0.1 ...`). On a CPU the group uses gloo and each rank gets
cores/N threads, so the comparison is the same cores used two ways; on GPUs it is NCCL, one GPU a
rank. Runs alternate and the best of each is kept, since these machines are noisy.

    python tests/bench/ddp.py [--device cpu|cuda] [--procs 2] [--digits 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from jobs.common.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def epoch_rate(out: Path, procs: int, threads: int, args: argparse.Namespace) -> float:
    """The group's train samples/s over one epoch (rank 0 logs the group-wide figure)."""
    workload = ["-m", "jobs.mnist_cnn", "--data", str(out / "none"), "--out", str(out)]
    workload += ["--synthetic", str(args.digits), "--epochs", "1", "--batch-size", "64"]
    workload += ["--device", args.device, "--threads", str(threads), "--log-every", "0"]
    if procs == 1:
        command = [sys.executable, *workload]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
        command += ["--nproc-per-node", str(procs), "--node-rank", "0"]
        command += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), *workload]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True, timeout=900)
    [row] = [r for r in read_metrics(out) if r["split"] == "train"]
    return float(row["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--digits", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = max(cores // args.procs, 1) if args.device == "cpu" else 4
    single_threads = threads * args.procs if args.device == "cpu" else 4
    best = {"single": 0.0, "group": 0.0}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            best["single"] = max(
                best["single"], epoch_rate(Path(tmp, "a"), 1, single_threads, args)
            )
            best["group"] = max(
                best["group"], epoch_rate(Path(tmp, "b"), args.procs, threads, args)
            )
    backend = "gloo" if args.device == "cpu" else "nccl"
    print(f"mnist_cnn, {args.digits} digits, batch 64 per process, {args.device}, {cores} cores")
    single = f"1 process x {single_threads} threads"
    group = f"{args.procs} processes x {threads} threads ({backend})"
    width = max(len(single), len(group))
    print(f"  {single:<{width}} {best['single']:9.0f} samples/s")
    ratio = best["group"] / best["single"]
    print(f"  {group:<{width}} {best['group']:9.0f} samples/s  ({ratio:.2f}x)")
    print(
        "  (the group's global batch is procs x 64: the same per-process work, more samples/step)"
    )


if __name__ == "__main__":
    main()
