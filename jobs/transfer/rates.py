"""The learning rate of each stage when the flags leave it out, by backbone family and
optimizer. Torch-free, so the flags' help and the planner's notes can quote it.

Why these: a new linear head on fixed features takes a usual rate (SGD 1e-2 / AdamW 1e-3 for
ResNet, whose batch-normed features are small and well scaled). Fine-tuning moves pretrained
weights that are already good, so it runs ten times lower. VGG has no batch norm and ~120 M
parameters in its fully connected layers: AdamW moves every one of them by about the learning
rate per step, and a VGG19 fine-tuned with AdamW at 1e-3 (the ResNet template's rates) saw its
loss blow up to 36.8. Under AdamW its fine-tune rate is therefore a hundred times below the
head's (1e-5, as Keras's transfer-learning guide uses), under SGD ten times; its head takes
1e-3 under both, since the 4096 features it reads are large (post-ReLU, unnormalised)."""

from __future__ import annotations

from dataclasses import dataclass

# (family, optimizer) -> (head-only stage, fine-tune stage)
DEFAULT_RATES: dict[tuple[str, str], tuple[float, float]] = {
    ("resnet", "sgd"): (1e-2, 1e-3),
    ("resnet", "adamw"): (1e-3, 1e-4),
    ("vgg", "sgd"): (1e-3, 1e-4),
    ("vgg", "adamw"): (1e-3, 1e-5),
}


@dataclass(frozen=True)
class StageRates:
    head: float  # the frozen stage: only the new head trains
    finetune: float  # everything trains
    source: str  # how they were chosen, for the start-up line


def family(arch: str) -> str:
    """vgg19_bn -> vgg, resnet50 -> resnet."""
    return "vgg" if arch.startswith("vgg") else "resnet"


def stage_rates(
    arch: str, optimizer: str, lr: float | None = None, finetune_lr: float | None = None
) -> StageRates:
    """The flags win: --lr sets the head's rate and --finetune-lr the fine-tune rate. A rate
    left out takes the table's; a fine-tune rate left out beside a given --lr keeps the
    table's ratio to it, so lowering --lr lowers both stages."""
    head_default, finetune_default = DEFAULT_RATES[(family(arch), optimizer)]
    head = head_default if lr is None else lr
    ratio = finetune_default / head_default
    finetune = finetune_lr if finetune_lr is not None else float(f"{head * ratio:.12g}")
    name = f"{family(arch)} + {optimizer}"
    if lr is None and finetune_lr is None:
        source = f"the defaults for {name}"
    elif finetune_lr is None:
        source = f"--lr, fine-tuning at --lr x {ratio:g} ({name}'s ratio)"
    elif lr is None:
        source = f"--finetune-lr, the head at {name}'s default"
    else:
        source = "--lr and --finetune-lr"
    return StageRates(head, finetune, source)


def defaults_text() -> str:
    """The table in one line, for --help."""
    return "; ".join(
        f"{family_name} {optimizer}: {head:g} then {finetune:g}"
        for (family_name, optimizer), (head, finetune) in DEFAULT_RATES.items()
    )
