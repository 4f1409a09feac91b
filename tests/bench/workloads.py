"""Training throughput of each bundled workload beside a plain hand-written PyTorch loop of the
same model and batch, measured in the same run (these machines are noisy: compare, don't trust
absolute numbers). Target: >= 1.0x on CPU; >= 1.5x on a GPU (AMP, channels_last, compile).

    python tests/bench/workloads.py [--device cpu|cuda] [--steps 60] [--only mnist_cnn,dcgan]

Each workload provides tests/bench/bench_<workload>.py with
`workload_samples_per_s(tmp, device, steps)` and `plain_samples_per_s(device, steps)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = {"cpu": 1.0, "cuda": 1.5}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", default="")
    options = parser.parse_args()
    sys.path[:0] = [str(HERE), str(HERE.parents[1])]
    names = sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))
    if options.only:
        names = [name for name in names if name in options.only.split(",")]
    target = TARGET["cuda" if options.device.startswith("cuda") else "cpu"]
    print(f"device {options.device}, {options.steps} steps each, target >= {target:.1f}x")
    print(f"{'workload':<18}{'workload/s':>12}{'plain/s':>12}{'ratio':>8}")
    for name in names:
        bench = importlib.import_module(f"bench_{name}")
        with tempfile.TemporaryDirectory() as folder:
            ours = bench.workload_samples_per_s(Path(folder), options.device, options.steps)
        plain = bench.plain_samples_per_s(options.device, options.steps)
        ratio = ours / plain
        verdict = "ok" if ratio >= target else "MISSED"
        print(f"{name:<18}{ours:>12.0f}{plain:>12.0f}{ratio:>7.2f}x  {verdict}", flush=True)


if __name__ == "__main__":
    main()
