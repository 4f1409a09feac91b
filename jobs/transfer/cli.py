"""``python -m jobs.transfer`` (train) and ``python -m jobs.transfer predict``: flags and entry
points. Imports torch only after the flags are checked, so a bad invocation fails fast."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobs.common.cli import (
    DEVICE_CHOICES,
    JobArgumentParser,
    add_picture_args,
    fraction,
    make_parser,
    non_negative_float,
    non_negative_int,
    parse_args,
    positive_float,
    positive_int,
    require_dir,
    run_cli,
)
from jobs.common.errors import UsageError
from jobs.common.signals import stop_on_signals
from jobs.transfer.rates import defaults_text

# Kept in step with jobs.transfer.models.ARCHS (that module imports torch; this one must not).
ARCHS = (
    "vgg11",
    "vgg11_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
)
OPTIMIZERS = ("sgd", "adamw")
PREDICT = "predict"


def sha256_hex(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"must be 64 hex digits, got {text!r}")
    return text.lower()


def image_size(text: str) -> int:
    value = positive_int(text)
    if value < 32:
        # Five stride-2 stages: below 32 px the ResNet feature map vanishes.
        raise argparse.ArgumentTypeError(f"must be at least 32, got {text!r}")
    return value


def build_parser() -> JobArgumentParser:
    parser = make_parser(
        "python -m jobs.transfer",
        "Fine-tune a pretrained VGG or ResNet on class folders in --data (root/<class>/*.jpg, "
        "or root/train/<class>/ and root/val/<class>/). Predict with "
        "`python -m jobs.transfer predict --help`.",
    )
    # Two stages need more than the common default of one epoch.
    parser.set_defaults(epochs=3)
    add = parser.add_argument
    add("--arch", choices=ARCHS, default="vgg19", help="backbone (default: %(default)s)")
    add(
        "--weights",
        metavar="PATH_OR_URL",
        default=None,
        help="pretrained state_dict: a .pth file or an http(s) URL (downloaded once into "
        "--weights-cache), e.g. torchvision's vgg19-dcbb9e9d.pth; without it the backbone is "
        "random",
    )
    add(
        "--weights-sha256",
        type=sha256_hex,
        default=None,
        metavar="HEX",
        help="refuse weights whose sha256 differs",
    )
    add(
        "--weights-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="where downloaded weights are kept (default: $TORCH_HOME/hub/checkpoints, "
        "as torchvision)",
    )
    add(
        "--num-classes",
        type=positive_int,
        default=None,
        metavar="N",
        help="outputs of the new head (default: the number of class folders)",
    )
    add(
        "--synthetic",
        type=positive_int,
        default=None,
        metavar="N",
        help="when --data holds no class folders, write N generated shape pictures "
        "(discs and squares) into it first",
    )
    add(
        "--frozen-epochs",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="first N epochs train only the new head, backbone frozen (default: %(default)s)",
    )
    add(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate of the frozen stage, where only the new head learns (default: by "
        f"backbone and optimizer, head then fine-tune: {defaults_text()})",
    )
    add(
        "--finetune-lr",
        type=positive_float,
        default=None,
        metavar="LR",
        help="learning rate once everything is unfrozen (default: the table under --lr; with "
        "--lr given, --lr times that table's ratio)",
    )
    add(
        "--clip",
        type=non_negative_float,
        default=5.0,
        metavar="NORM",
        help="fine-tune stage: clip the gradients' total norm to NORM, so one bad batch cannot "
        "throw the pretrained weights away; 0 = no clipping (default: %(default)s)",
    )
    add(
        "--optimizer",
        choices=OPTIMIZERS,
        default="sgd",
        help="sgd (momentum 0.9) or adamw (default: %(default)s)",
    )
    add(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="B",
        help="training batch size (default: %(default)s)",
    )
    add(
        "--image-size",
        type=image_size,
        default=224,
        metavar="PX",
        help="pictures are resized and centre-cropped to PX x PX (default: %(default)s)",
    )
    add(
        "--augment",
        action="store_true",
        help="random horizontal flips and random resized crops while training",
    )
    add(
        "--val-fraction",
        type=fraction,
        default=0.2,
        metavar="F",
        help="share held out for validation unless --data has train/ and val/ "
        "(default: %(default)s)",
    )
    add_picture_args(parser)
    return parser


def plan_notes(args: Mapping[str, object]) -> list[str]:
    """What a person should know before machines are rented for these args (a spec's
    `args`, keys as the flags' dest names): read by the orchestrator at plan time."""
    if args.get("weights"):
        return []
    arch = str(args.get("arch") or build_parser().get_default("arch"))
    return [
        f"transfer: no weights in args, so the {arch} backbone starts from random init and "
        "this trains from scratch, not transfer learning. Send a pretrained state_dict with "
        f"the job, e.g. `files: {{/files/{arch}.pth: ./weights/{arch}.pth}}` and "
        f"`args: {{weights: /files/{arch}.pth}}` (torchvision's .pth files load as they are), "
        "or give weights an http(s) URL the node downloads once"
    ]


def build_predict_parser() -> JobArgumentParser:
    parser = JobArgumentParser(
        prog="python -m jobs.transfer predict",
        description="Classify pictures with a checkpoint of `python -m jobs.transfer`; "
        "prints `path  class  confidence` per picture.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help="a ckpt-*.pt file, or a training --out folder (its newest one)",
    )
    parser.add_argument(
        "images", type=Path, nargs="+", metavar="IMAGE", help="picture files or folders of pictures"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON array instead")
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="auto = cuda when available, else cpu (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="B",
        help="pictures per forward pass (default: %(default)s)",
    )
    return parser


def _train_main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    if args.synthetic is None:
        require_dir(
            args.data,
            "--data",
            "put one folder of pictures per class there, or pass --synthetic N",
        )
    if args.weights_sha256 is not None and args.weights is None:
        raise UsageError("--weights-sha256 needs --weights; add --weights PATH_OR_URL")
    # SIGTERM handling starts before the slow torch import, so an early stop exits 0 too.
    with stop_on_signals() as stop:
        from jobs.transfer.train import train  # heavy: imports torch

        return train(args, stop)


def _predict_main(argv: Sequence[str] | None) -> int:
    args = build_predict_parser().parse_args(argv)
    if not args.checkpoint.exists():
        raise UsageError(
            f"--checkpoint {args.checkpoint}: not found; pass a ckpt-*.pt file or a "
            "training --out folder"
        )
    from jobs.transfer.predict import predict  # heavy: imports torch

    return predict(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [PREDICT]:
        return run_cli(_predict_main, argv[1:])
    return run_cli(_train_main, argv)
