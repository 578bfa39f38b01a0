"""What one training step sees: cached images, augmentation and sampling."""

from __future__ import annotations

import math
from collections.abc import Iterator

import albumentations as A
import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, Sampler

from fetalhead.data import CachedCases, Case, letterboxed_sample
from fetalhead.geometry.crop import head_crop_box
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.gestation import hadlock_1984, trimester


def build_augmentation(seed: int, scale: tuple[float, float], record: bool = False) -> A.Compose:
    """Flips, small rotations, scales (``scale``, uniform) and shifts, and gamma/contrast.

    With ``record``, each result lists the parameters applied (``applied_transforms``),
    from which :func:`zoom_of` reads the zoom; the random draws are the same.
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Affine(
                scale=scale,
                rotate=(-20, 20),
                translate_percent=(-0.06, 0.06),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                p=0.7,
            ),
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=0.5),
        ],
        seed=seed,
        save_applied_params=record,
    )


def zoom_of(applied: list[tuple[str, dict]]) -> float:
    """The areal zoom of an augmentation result: sqrt(|det|) of its affine matrix, else 1."""
    for name, params in applied:
        if name == "Affine":
            return float(np.sqrt(abs(np.linalg.det(np.asarray(params["matrix"])[:2, :2]))))
    return 1.0


def trimester_weights(cases: list[Case]) -> NDArray[np.float64]:
    """Per-case sampling weight, the inverse square root of its trimester's share.

    Cases without a reference HC get weight 1 (as if their trimester were typical).
    """
    labels = [
        trimester(hadlock_1984(c.hc_mm).weeks) if c.hc_mm and c.hc_mm > 0 else None for c in cases
    ]
    known = [t for t in labels if t is not None]
    share = {t: known.count(t) / len(known) for t in set(known)}
    w = np.array([1.0 if t is None else share[t] ** -0.5 for t in labels])
    return w / w.mean()


class WeightedEpochSampler(Sampler[int]):
    """Each epoch, draw indices with replacement in proportion to ``weights``.

    The draw depends only on (seed, epoch), so all ranks draw the same list and rank
    ``r`` of ``world`` takes every ``world``-th index from ``r``: equal step counts,
    no overlap, and an exactly repeatable (resumable) run.
    """

    def __init__(self, weights: NDArray[np.float64], seed: int, rank: int, world: int) -> None:
        self.p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.total = math.ceil(len(self.p) / world) * world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.choice(len(self.p), size=self.total, replace=True, p=self.p)
        return iter(idx[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.total // self.world


class HeadDataset(Dataset):
    """Cached letterboxed images with soft targets and optional augmentation.

    With ``crop_fraction > 0`` (the cache must keep its originals), that share of
    the samples is instead a box around the reference head
    (:func:`fetalhead.geometry.crop.head_crop_box`) with a random margin drawn
    log-uniformly from ``crop_margin`` and a random shift of up to
    ``crop_shift`` of the box, letterboxed into the network input: the head at
    nearly one scale whatever its size, as the second pass of a two-pass
    measurer sees it, with the jitter of a first pass's ellipse.

    With ``negative_fraction > 0`` (the cache must hold its negatives), that share of
    the samples is instead the case's box clear of its head
    (:func:`fetalhead.geometry.crop.headless_box`: real ultrasound, zoomed, showing no
    head) with an empty target, where the case has one: a hard negative.
    """

    def __init__(
        self,
        cache: CachedCases,
        augment: A.Compose | None,
        crop_fraction: float = 0.0,
        crop_margin: tuple[float, float] = (1.1, 1.8),
        crop_shift: float = 0.08,
        negative_fraction: float = 0.0,
    ) -> None:
        if crop_fraction > 0 and len(cache.originals) != len(cache):
            raise ValueError("head crops need a cache built with keep_originals=True")
        if negative_fraction > 0 and len(cache.negatives) != len(cache):
            raise ValueError("negatives need a cache built with negatives=True")
        self.cache = cache
        self.augment = augment
        self.crop_fraction = crop_fraction
        self.crop_margin = crop_margin
        self.crop_shift = crop_shift
        self.negative_fraction = negative_fraction

    def __len__(self) -> int:
        return len(self.cache)

    def _crop_sample(self, i: int) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        image, ref = self.cache.originals[i]
        lo, hi = np.log(self.crop_margin[0]), np.log(self.crop_margin[1])
        margin = float(np.exp(np.random.uniform(lo, hi)))
        shift = np.random.uniform(-self.crop_shift, self.crop_shift, size=2)
        box = head_crop_box(ref, image.shape, self.cache.size_hw, margin, (shift[0], shift[1]))
        local = Ellipse(ref.cx - box.x0, ref.cy - box.y0, ref.a, ref.b, ref.angle)
        sub = image[box.y0 : box.y1, box.x0 : box.x1]
        return letterboxed_sample(sub, local, self.cache.size_hw, self.cache.keep_aspect, 4)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image, mm per network pixel, target)``; a zoom of z divides the pixel size by z."""
        mm = self.cache.mm_per_pixel[i]
        negative = (
            self.cache.negatives[i]
            if self.negative_fraction > 0 and np.random.random() < self.negative_fraction
            else None
        )
        if negative is not None:
            img, target = negative, np.zeros(negative.shape, np.float32)
            mm = float("nan")  # another scale
        elif self.crop_fraction > 0 and np.random.random() < self.crop_fraction:
            img, target = self._crop_sample(i)
            mm = float("nan")  # another scale; crops are not combined with a scale input
        else:
            img, target = self.cache.images[i], self.cache.targets[i]
        if self.augment is not None:
            out = self.augment(image=img, mask=target)
            img, target = out["image"], out["mask"]
            if "applied_transforms" in out:
                mm /= zoom_of(out["applied_transforms"])
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / 255.0)[None]
        y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
        return x, torch.tensor(mm, dtype=torch.float32), y
