"""Losses and the training Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fetalhead.training.config import LossName


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss with ``smooth`` added to numerator and denominator, per image."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - ((2.0 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of ``logits > 0`` against ``target > 0.5``."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2.0 * inter / denom.clamp(min=1), torch.ones_like(denom))


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: LossName) -> torch.Tensor:
    loss = dice_loss(logits, target)
    if kind == "dice_bce":
        loss = loss + F.binary_cross_entropy_with_logits(logits, target)
    return loss
