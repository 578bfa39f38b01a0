"""Measurements: the ellipse of one image in mm, its GA, qc, and its table row."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse
from fetalhead.geometry.letterbox import Letterbox
from fetalhead.gestation import (
    GAEstimate,
    hadlock_2sd_range,
    hadlock_1984,
    intergrowth_2sd_range,
    intergrowth_21st,
)


@dataclass
class Measurement:
    """The result of measuring one image (or one frame of a multi-frame file).

    Attributes:
        filename: Name of the source file.
        frame: Frame index for multi-frame files, else ``None``.
        n_frames: Number of frames of the file (a resumed run checks that all are done).
        image_shape: ``(height, width)`` of the original image.
        qc: ``"ok"`` or ``;``-joined reasons (``no_head_found``, ``low_confidence``,
            ``touches_border``, ``uncertain_hc``, ``head_crosses_regions``, ``ambiguous_regions``,
            ``outside_regions``, ``non_obstetric_view``, ``unreadable``,
            ``no_pixel_size``).
        ellipse: Fitted ellipse in original pixels, or ``None``.
        pixel_size_mm: Pixel size used, or ``None``.
        pixel_size_source: ``cli``, ``csv``, ``dicom-region`` or ``dicom-pixel-spacing``.
        confidence: Mean head probability inside the predicted head.
        hc_rel_halfwidth: Half-width of the calibrated HC interval relative to HC
            (:mod:`fetalhead.uncertainty`), if the weights carry a calibration.
        head_score: How far inside the envelope of foetal heads in ultrasound the found
            region lies (:mod:`fetalhead.plausibility`): 1 at the edge of the HC18
            heads, 0 at the gate; at or below 0 it is dropped and qc is
            ``no_head_found``.
        flag_score: Log-odds of an HC error over 5 mm from the calibrated qc flag
            (:class:`fetalhead.uncertainty.FlagModel`); ``uncertain_hc`` above its
            threshold. Not a CSV column: it serves calibration and analysis.
        contour: Boundary points ``(x, y)`` in original pixels.
        error: Human-readable reason when the image could not be measured.

    """

    filename: str
    frame: int | None = None
    n_frames: int = 1
    image_shape: tuple[int, int] | None = None
    qc: str = "ok"
    ellipse: Ellipse | None = None
    pixel_size_mm: float | None = None
    pixel_size_source: str | None = None
    confidence: float | None = None
    head_score: float | None = None
    hc_rel_halfwidth: float | None = None
    flag_score: float | None = None
    contour: NDArray[np.float64] | None = field(default=None, repr=False)
    error: str | None = None
    _prob: NDArray[np.float32] | None = field(default=None, repr=False)
    _letterbox: Letterbox | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Measurement:
        """Rebuild a measurement (ellipse, pixel size, qc) from a ``predictions.csv`` row."""

        def num(key: str) -> float | None:
            v = row.get(key, "")
            return float(v) if v not in ("", None) else None

        px = num("pixel_size_mm")
        keys = ("center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm")
        vals = [num(k) for k in keys]
        angle = num("angle_rad")
        ellipse = None
        if px and angle is not None and all(v is not None for v in vals):
            cx, cy, a, b = (float(v) / px for v in vals)  # type: ignore[arg-type]
            ellipse = Ellipse(cx, cy, a, b, angle)
        frame = row.get("frame", "")
        return cls(
            filename=row["filename"],
            frame=int(frame) if frame else None,
            qc=row.get("qc") or "ok",
            ellipse=ellipse,
            pixel_size_mm=px,
            pixel_size_source=row.get("pixel_size_source") or None,
            confidence=num("confidence"),
            error=row.get("error") or None,
        )

    def add_qc(self, *reasons: str) -> None:
        """Add qc reasons (``ok`` is replaced; a reason already present is kept once)."""
        have = [] if self.qc == "ok" else self.qc.split(";")
        have += [r for r in reasons if r not in have]
        self.qc = ";".join(have) if have else "ok"

    @property
    def ok(self) -> bool:
        """True when the measure passed every quality check."""
        return self.qc == "ok"

    def _mm(self, px: float) -> float | None:
        if self.ellipse is None or self.pixel_size_mm is None:
            return None
        return px * self.pixel_size_mm

    @property
    def hc_mm(self) -> float | None:
        """Head circumference (Ramanujan perimeter of the ellipse) in mm."""
        return self._mm(self.ellipse.perimeter) if self.ellipse else None

    def _hc_bound(self, sign: int) -> float | None:
        hc = self.hc_mm
        if hc is None or self.hc_rel_halfwidth is None:
            return None
        return hc * (1 + sign * self.hc_rel_halfwidth)

    @property
    def hc_low_mm(self) -> float | None:
        """Lower end of the calibrated HC interval, in mm."""
        return self._hc_bound(-1)

    @property
    def hc_high_mm(self) -> float | None:
        """Upper end of the calibrated HC interval, in mm."""
        return self._hc_bound(+1)

    @property
    def bpd_mm(self) -> float | None:
        """Biparietal diameter: minor axis of the ellipse, in mm."""
        return self._mm(self.ellipse.minor) if self.ellipse else None

    @property
    def ofd_mm(self) -> float | None:
        """Occipitofrontal diameter: major axis of the ellipse, in mm."""
        return self._mm(self.ellipse.major) if self.ellipse else None

    @property
    def ga_hadlock(self) -> GAEstimate | None:
        """Gestational age by Hadlock 1984."""
        hc = self.hc_mm
        return hadlock_1984(hc) if hc is not None else None

    @property
    def ga_hadlock_2sd(self) -> tuple[float, float] | None:
        """Hadlock GA range (weeks): the HC interval with the population's +/-2 SD.

        Without a calibrated interval, the population spread at the HC alone. None
        where the estimate lies outside Hadlock's 14-42 weeks: the spread was
        reported for the second and third trimesters only.
        """
        hc, ga = self.hc_mm, self.ga_hadlock
        if hc is None or ga is None or not ga.in_range:
            return None
        return hadlock_2sd_range(*self._hc_ends(hc))

    def _hc_ends(self, hc: float) -> tuple[float, float]:
        """The HC interval's ends, or ``hc`` twice without a calibrated interval."""
        lo, hi = self.hc_low_mm, self.hc_high_mm
        return (lo if lo is not None else hc, hi if hi is not None else hc)

    @property
    def ga_intergrowth(self) -> GAEstimate | None:
        """Gestational age by INTERGROWTH-21st."""
        hc = self.hc_mm
        return intergrowth_21st(hc) if hc is not None else None

    @property
    def ga_intergrowth_2sd(self) -> tuple[float, float] | None:
        """INTERGROWTH-21st GA range (weeks): the HC interval with the population's +/-2 SD.

        The GA over which the interval's ends lie within 2 SD of the INTERGROWTH-21st
        growth standard's mean HC (:func:`fetalhead.gestation.intergrowth_2sd_range`);
        without a calibrated interval, the population spread at the HC alone. None
        where an end falls outside the standard's 14-40 weeks.
        """
        hc = self.hc_mm
        return intergrowth_2sd_range(*self._hc_ends(hc)) if hc is not None else None

    @cached_property
    def mask(self) -> NDArray[np.uint8] | None:
        """0/1 head mask at the original resolution (probability map upsampled).

        It is the largest region of the upsampled probability map above 0.5,
        with holes filled.
        """
        if self._prob is None or self._letterbox is None or self.image_shape is None:
            return None
        h, w = self.image_shape
        up = cv2.resize(self._letterbox.crop(self._prob), (w, h), interpolation=cv2.INTER_LINEAR)
        binary = (up > 0.5).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if n <= 1:
            return np.zeros((h, w), np.uint8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        from scipy import ndimage

        return ndimage.binary_fill_holes(labels == largest).astype(np.uint8)

    def to_row(self) -> dict[str, Any]:
        """One CSV/JSON row: HC18 ellipse parameters, measures, GA and qc."""
        row: dict[str, Any] = {
            "filename": self.filename,
            "frame": self.frame,
            "n_frames": self.n_frames,
        }
        hc18 = (
            self.ellipse.to_hc18_mm(self.pixel_size_mm)
            if self.ellipse is not None and self.pixel_size_mm is not None
            else dict.fromkeys(
                ("center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")
            )
        )
        row.update(hc18)
        gh, gi = self.ga_hadlock, self.ga_intergrowth
        lo, hi = self.hc_low_mm, self.hc_high_mm
        # GA at the ends of the HC interval: both formulas rise with HC. This is the
        # measurement's uncertainty only, not the population spread of GA at a given HC.
        ga_range = {
            f"ga_weeks_{name}_{end}": fn(hc).weeks if hc is not None else None
            for name, fn in (("hadlock", hadlock_1984), ("intergrowth", intergrowth_21st))
            for end, hc in (("low", lo), ("high", hi))
        }
        # Both: the HC interval (or HC alone, uncalibrated) widened by each formula's
        # population +/-2 SD at a given HC.
        for name, spread in (
            ("hadlock", self.ga_hadlock_2sd),
            ("intergrowth", self.ga_intergrowth_2sd),
        ):
            ga_range[f"ga_weeks_{name}_2sd_low"] = spread[0] if spread else None
            ga_range[f"ga_weeks_{name}_2sd_high"] = spread[1] if spread else None
        row.update(
            {
                "hc_mm": self.hc_mm,
                "hc_low_mm": self.hc_low_mm,
                "hc_high_mm": self.hc_high_mm,
                "bpd_mm": self.bpd_mm,
                "ofd_mm": self.ofd_mm,
                "ga_weeks_hadlock": gh.weeks if gh else None,
                "ga_hadlock_in_range": gh.in_range if gh else None,
                "ga_weeks_intergrowth": gi.weeks if gi else None,
                "ga_intergrowth_in_range": gi.in_range if gi else None,
                **ga_range,
                "pixel_size_mm": self.pixel_size_mm,
                "pixel_size_source": self.pixel_size_source,
                "confidence": self.confidence,
                "head_score": self.head_score,
                "qc": self.qc,
                "error": self.error,
            }
        )
        return row


PREDICTION_COLUMNS = list(Measurement("x").to_row().keys())


def unreadable(name: str, message: str, frame: int | None = None) -> Measurement:
    """A result row for a file that could not be measured at all."""
    return Measurement(filename=name, frame=frame, qc="unreadable", error=message)
