"""``python -m jobs.latent_walk``: flags and entry point. The checkpoint is located before
torch is imported, so a missing one fails fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from jobs.common.cli import (
    JobArgumentParser,
    make_parser,
    parse_args,
    positive_float,
    positive_int,
    run_cli,
)
from jobs.common.errors import UsageError
from jobs.common.signals import stop_on_signals
from jobs.latent_walk.find import newest_checkpoint
from jobs.latent_walk.video import find_ffmpeg

DEFAULT_FPS = 12.5  # 80 ms a frame, the GIF's frame time before --fps existed
MAX_SIZE = 2048
VIDEO_CHOICES = ("auto", "mp4", "gif")


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return value


def picture_size(text: str) -> int:
    value = positive_int(text)
    if not 8 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be an integer from 8 to {MAX_SIZE}, got {text!r}")
    return value


def build_parser() -> JobArgumentParser:
    # The common flags too: the orchestrator passes --resume, --keep etc. to every workload.
    parser = make_parser(
        "python -m jobs.latent_walk",
        "Walk through the latent space of a dcgan checkpoint (the newest ckpt-*.pt under "
        "--data, or --checkpoint): PNG frames, walk.gif and contact-sheet.png in --out.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="dcgan checkpoint to use (default: the newest ckpt-*.pt below --data)",
    )
    parser.add_argument(
        "--points",
        type=at_least_two,
        default=8,
        metavar="K",
        help="random latent points visited in order (default: %(default)s)",
    )
    parser.add_argument(
        "--frames-per-step",
        type=positive_int,
        default=12,
        metavar="F",
        help="frames from one point to the next; the walk has (K-1)*F+1 frames "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=picture_size,
        default=None,
        metavar="PX",
        help="side of the frames and the video in px, resampled from the generator's pictures "
        "(default: the generator's own size)",
    )
    parser.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        metavar="F",
        help=f"frames per second of the video (default: {DEFAULT_FPS:g}; a GIF rounds the "
        "frame time to 10 ms, and shows at most 50 fps)",
    )
    parser.add_argument(
        "--frame-ms",
        type=positive_int,
        default=None,
        metavar="MS",
        help="the frame time instead of --fps, in milliseconds (default: 80)",
    )
    parser.add_argument(
        "--video",
        choices=VIDEO_CHOICES,
        default="auto",
        help="auto = walk.mp4 when ffmpeg is on PATH or imageio-ffmpeg is installed, else "
        "walk.gif (default: %(default)s)",
    )
    parser.add_argument(
        "--synthetic-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="when --data holds no checkpoint, first train a small dcgan on generated shapes "
        "for N steps (in --out/synthetic-dcgan, resumable) and walk through that",
    )
    parser.add_argument(
        "--keep-training-pictures",
        action="store_true",
        help="with --synthetic-steps: write the generated training pictures into "
        "--out/synthetic-dcgan/shapes, which comes home with the run (default: a scratch "
        "folder on the node, made again from the seed when needed)",
    )
    return parser


def frames_per_second(args: argparse.Namespace) -> float:
    """--fps, or 1000 / --frame-ms, or the default; both at once is an error."""
    if args.fps is not None and args.frame_ms is not None:
        raise UsageError("--fps and --frame-ms both set the frame time; pass one of them")
    if args.frame_ms is not None:
        return 1000.0 / args.frame_ms
    return DEFAULT_FPS if args.fps is None else args.fps


def video_encoder(args: argparse.Namespace) -> str | None:
    """The ffmpeg to write walk.mp4 with, or None for walk.gif."""
    if args.video == "gif":
        return None
    ffmpeg = find_ffmpeg()
    if ffmpeg is None and args.video == "mp4":
        raise UsageError(
            "--video mp4: no MP4 encoder (ffmpeg is not on PATH and imageio-ffmpeg is not "
            "installed); install one of them, or pass --video gif"
        )
    return ffmpeg


def locate_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint to walk through; None means: train one (--synthetic-steps)."""
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise UsageError(
                f"--checkpoint {args.checkpoint}: file not found; pass a dcgan generator.pt "
                "or ckpt-*.pt"
            )
        return args.checkpoint
    found = newest_checkpoint(args.data)
    if found is None and args.synthetic_steps is None:
        raise UsageError(
            f"--data {args.data}: no dcgan checkpoint (generator.pt or ckpt-*.pt) found; point "
            "--data at a dcgan --out folder, pass --checkpoint PATH, or add --synthetic-steps N "
            "to train a small one first"
        )
    return found


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    fps, ffmpeg = frames_per_second(args), video_encoder(args)
    checkpoint = locate_checkpoint(args)
    if ffmpeg is None and args.video == "auto":
        print(
            "latent_walk: no MP4 encoder (ffmpeg is not on PATH, imageio-ffmpeg is not "
            "installed): writing walk.gif instead",
            flush=True,
        )
    with stop_on_signals() as stop:
        from jobs.latent_walk.walk import VideoSettings, run  # heavy: imports torch

        return run(args, checkpoint, stop, VideoSettings(fps, args.size, ffmpeg))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
