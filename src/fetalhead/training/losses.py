"""Losses and the training Dice."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fetalhead.training.config import LossName

BOUNDARY_RADIUS_PX = 3
"""Half-width, in network pixels, of the band that ``dice_bce_boundary`` weighs up."""
BOUNDARY_GAIN = 4.0
"""Extra weight of a pixel fully inside that band (weight 1 + gain)."""
DISTANCE_WEIGHT = 0.02
"""Weight of the distance term of ``dice_bce_distance`` (per network pixel of distance)."""


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


def boundary_weights(
    target: torch.Tensor, radius: int = BOUNDARY_RADIUS_PX, gain: float = BOUNDARY_GAIN
) -> torch.Tensor:
    """Per-pixel loss weights, ``1 + gain`` within ``radius`` pixels of the outline.

    The band is the morphological gradient of the (soft) target over a square of side
    ``2 * radius + 1``: the largest minus the smallest target value there. It is 1 where
    the square holds both head and background, 0 far from the outline, and in between
    where the target is only partly covered.

    Args:
        target: Target coverage in [0, 1], shape (N, 1, H, W).
        radius: Half-width of the band in pixels.
        gain: Extra weight inside the band.

    Returns:
        Weights of the target's shape, each in [1, 1 + gain].

    """
    k = 2 * radius + 1
    hi = F.max_pool2d(target, k, stride=1, padding=radius)
    lo = -F.max_pool2d(-target, k, stride=1, padding=radius)
    return 1.0 + gain * (hi - lo)


def signed_distance(target: torch.Tensor) -> torch.Tensor:
    """Signed distance, in pixels, of every pixel from the outline of ``target > 0.5``.

    Positive outside the head, negative inside, about +-0.5 on either side of the
    outline (the Euclidean distance to the nearest pixel of the other class, less half a
    pixel). An image with no head (or no background) gets zeros: nothing to be near.

    Args:
        target: Target coverage in [0, 1], shape (N, 1, H, W).

    Returns:
        Float32 distances of the target's shape, on the target's device.

    """
    masks = (target.detach().float().cpu().numpy() > 0.5).astype(np.uint8)
    out = np.zeros(masks.shape, np.float32)
    for i, m in enumerate(masks[:, 0]):
        if m.all() or not m.any():
            continue
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        inside = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        out[i, 0] = np.where(m > 0, 0.5 - inside, outside - 0.5)
    return torch.from_numpy(out).to(target.device)


def distance_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Boundary loss of Kervadec et al. (2019): mean head probability times signed distance.

    Each pixel's probability of head is weighed by its signed distance from the
    reference outline (:func:`signed_distance`), so a false head pixel costs in
    proportion to how far outside the head it lies, and a missed one to how deep
    inside. Cross-entropy and Dice charge a region of amniotic fluid merged with a
    small head no more per pixel than a boundary a pixel too wide. Its value is lowest,
    and negative, at the reference itself.
    """
    return (torch.sigmoid(logits) * signed_distance(target)).mean()


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: LossName) -> torch.Tensor:
    """The training loss ``kind`` of logits against target coverage, (N, 1, H, W) each."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    loss = dice_loss(logits, target)
    if kind in ("dice_bce", "dice_bce_distance"):
        loss = loss + F.binary_cross_entropy_with_logits(logits, target)
    elif kind == "dice_bce_boundary":
        w = boundary_weights(target)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = loss + (w * bce).sum() / w.sum()
    if kind == "dice_bce_distance":
        loss = loss + DISTANCE_WEIGHT * distance_loss(logits, target)
    return loss
