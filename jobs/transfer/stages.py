"""The two training stages: ``frozen`` (only the new head learns, at --lr, the backbone is a
fixed feature extractor) and ``finetune`` (everything learns, at --finetune-lr, its gradients
clipped to --clip). Rates the flags leave out come from jobs/transfer/rates.py."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from jobs.transfer.models import backbone_modules, head_module
from jobs.transfer.rates import StageRates, stage_rates

FROZEN, FINETUNE = "frozen", "finetune"


def stage_of(args: argparse.Namespace, epoch: int) -> str:
    """The stage is a function of the epoch alone, so a resumed run cannot pick another."""
    return FROZEN if epoch < args.frozen_epochs else FINETUNE


def rates(args: argparse.Namespace) -> StageRates:
    return stage_rates(args.arch, args.optimizer, args.lr, args.finetune_lr)


def clip_norm(args: argparse.Namespace, stage: str) -> float | None:
    """The gradient norm the stage clips to: none while only the head learns (a linear model
    on fixed features cannot wreck the backbone), --clip once everything does (0 = never)."""
    if stage == FROZEN or not args.clip:
        return None
    return float(args.clip)


def enter_stage(model: nn.Module, stage: str, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Set which parameters learn and return a fresh optimizer over exactly those.

    A new optimizer per stage: momentum gathered for the head alone says nothing about the
    backbone, and the stage's learning rate differs."""
    frozen = stage == FROZEN
    for parameter in model.parameters():
        parameter.requires_grad_(not frozen)
    head = head_module(model)
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    params = list(head.parameters()) if frozen else list(model.parameters())
    lr = rates(args).head if frozen else rates(args).finetune
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def set_train_mode(model: nn.Module, stage: str) -> None:
    """Training mode; in the frozen stage the backbone stays in eval mode, so batch-norm keeps
    its pretrained statistics (a frozen backbone must not change at all) and dropout in
    VGG's first classifier layers is off, making the head's features deterministic."""
    model.train()
    if stage == FROZEN:
        for module in backbone_modules(model):
            module.eval()
