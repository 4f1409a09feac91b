"""Sample quality of the dcgan workload's old recipe beside its new defaults, at the same step
count, on a few hundred generated album-cover-like pictures (64 px: a two-colour gradient, one
large shape in another colour, sometimes a title band).

Old: the paper's DCGAN as the workload ran it before (`--augment none --no-spectral-norm
--label-smoothing 0 --lr-d 2e-4`). New: the workload's defaults (DiffAugment, spectral norm on
the discriminator, one-sided label smoothing 0.1, the discriminator's lr 4e-4: twice the
generator's). Both runs use the real `python -m jobs.dcgan` code,
the same pictures, seed, nets, batch and step count; the two run side by side, one thread each.
Printed for each: the last epoch's fid_proxy and fid_conv (lower is better) and diversity
(1 = as varied as the pictures), the best fid_conv of any epoch, and D's mean output on fakes.

    python tests/bench/dcgan_quality.py [--steps 400] [--pictures 300] [--width 16] [--batch 32]
        [--old-args "..."] [--new-args "..."] [--keep-runs DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
OLD_RECIPE = ["--augment", "none", "--no-spectral-norm", "--label-smoothing", "0", "--lr-d", "2e-4"]
FIGURES = ("fid_proxy", "fid_conv", "diversity")


def cover(rng: random.Random, size: int) -> Image.Image:
    """One picture: a gradient between two colours in a random direction, one large disc,
    square, triangle or ring in a third, and a light or dark title band on a third of them."""
    first, second = (np.array([rng.randint(0, 255) for _ in range(3)]) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    t = np.clip(0.5 + xs * math.cos(angle) + ys * math.sin(angle), 0, 1)[..., None]
    image = Image.fromarray((first * (1 - t) + second * t).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    radius = rng.uniform(0.18, 0.34) * size
    cx, cy = rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    kind = rng.choice(("disc", "square", "triangle", "ring"))
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        corners = [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)]
        draw.polygon(corners, fill=colour)
    else:
        draw.ellipse(box, outline=colour, width=max(2, int(radius / 3)))
    if rng.random() < 1 / 3:
        top = rng.choice((0.08, 0.78)) * size
        shade = (245, 245, 240) if rng.random() < 0.5 else (20, 20, 25)
        draw.rectangle((0, top, size, top + 0.12 * size), fill=shade)
    return image


def write_covers(folder: Path, count: int, size: int = 64, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        cover(rng, size).save(folder / f"cover-{index:04d}.png")
    return folder


def start_run(data: Path, out: Path, args: argparse.Namespace, recipe: list[str]):
    per_epoch = max(1, args.pictures // args.batch)
    epochs = math.ceil(args.steps / per_epoch)
    argv = [
        sys.executable, "-m", "jobs.dcgan",
        "--data", str(data), "--out", str(out),
        "--epochs", str(epochs),
        "--batch-size", str(args.batch),
        "--ngf", str(args.width), "--ndf", str(args.width),
        "--seed", str(args.seed),
        "--samples-every", str(max(1, epochs // 8)),
        "--log-every", "0",
        "--threads", "1",
        "--device", "cpu",
        *recipe,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (out.parent / f"{out.name}.log").open("w")
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def result(out: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [row for row in rows if row["split"] == "train"]
    last = epochs[-1]
    return {
        **{name: last[name] for name in FIGURES},
        "best_fid_conv": min(row["fid_conv"] for row in epochs),
        "d_fake": last["d_fake"],
        "loss_d": last["loss_d"],
        "steps": last["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=300, help="steps of each run (rounded up to whole epochs)"
    )
    parser.add_argument("--pictures", type=int, default=300)
    parser.add_argument("--width", type=int, default=16, help="ngf = ndf")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-args", default=" ".join(OLD_RECIPE))
    parser.add_argument("--new-args", default="", help="flags added to the new defaults")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep_runs or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = write_covers(root / "covers", args.pictures, seed=args.seed)
        recipes = {"old": shlex.split(args.old_args), "new": shlex.split(args.new_args)}
        started = time.perf_counter()
        runs = {name: start_run(data, root / name, args, argv) for name, argv in recipes.items()}
        for name, proc in runs.items():
            if proc.wait() != 0:
                sys.exit(f"{name} run failed; see {root / name}.log")
        elapsed = time.perf_counter() - started
        results = {name: result(root / name) for name in runs}

    old, new = results["old"], results["new"]
    print(
        f"dcgan quality, {args.pictures} generated covers at 64 px, ngf=ndf={args.width}, "
        f"batch {args.batch}, {old['steps']} steps each, seed {args.seed} ({elapsed:.0f} s)"
    )
    print(f"  old: {args.old_args or '(defaults)'}")
    print(f"  new: defaults {args.new_args}".rstrip())
    print(f"{'figure':>14} {'old':>10} {'new':>10}  better")
    wins = 0
    for name, lower_better in (
        ("fid_proxy", True),
        ("fid_conv", True),
        ("best_fid_conv", True),
        ("diversity", None),
        ("d_fake", None),
        ("loss_d", None),
    ):
        verdict = ""
        if lower_better is not None:
            verdict = "new" if (new[name] < old[name]) == lower_better else "old"
            wins += verdict == "new"
        print(f"{name:>14} {old[name]:>10.4g} {new[name]:>10.4g}  {verdict}")
    print(f"new defaults better on {wins} of 3 distance figures (lower is better)")
    if new["fid_conv"] >= old["fid_conv"] or new["fid_proxy"] >= old["fid_proxy"]:
        sys.exit("the new defaults did not beat the old recipe at this step count")


if __name__ == "__main__":
    main()
