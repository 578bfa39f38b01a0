"""Is it a foetal head in ultrasound? Features of a found head and a fitted rejection rule.

The network segments anything round and bright: a ring drawn on black, a cardiac
view, a blank image's faint blob. Before any number is reported, the found head
is described by a few scale-free features of the image and the probability map,
and a rule fitted on HC18 heads against a generated corpus of
non-heads (``scripts/fit_nonhead.py``) decides whether it is one: an envelope
of gates, each halfway between the most extreme HC18 head and the typical
non-head beyond it. What is not a head gets ``no_head_found`` and no measures.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from fetalhead.geometry.ellipse import Ellipse, boundary_rms, render_ellipse_mask

#: Anatomic regions that Image Type (0008,0008) value 3 of an ultrasound DICOM may name
#: (DICOM PS3.3, US Image Module) where no foetal head in utero is imaged: the heart
#: (from the chest, the oesophagus, inside it or on its surface), the breast, vessels from
#: inside, the brain through the skull, a neonate's head, the rectum.
NON_OBSTETRIC_IMAGE_TYPES = frozenset({
    "EPICARDIAL", "TRANSTHORACIC", "TRANSESOPHAGEAL", "TEE", "INTRACARDIAC",
    "INTRAVASCULAR", "BREAST", "TRANSCRANIAL", "NEONATAL HEAD", "TRANSRECTAL",
    "ENDORECTAL",
})  # fmt: skip
#: Body Part Examined (0018,0015) values that are not a pregnant abdomen or pelvis.
NON_OBSTETRIC_BODY_PARTS = frozenset({"HEART", "BREAST"})

#: Feature names, in the order the model's coefficients use.
FEATURES = ("confidence", "log_fit_residual", "speckle", "flat_fraction", "gray_levels")

#: The fitted rejection model shipped with fetalhead.
DEFAULT_MODEL = Path(__file__).parent / "weights" / "nonhead_rejector.json"


def _ellipse_scaled(e: Ellipse, f: float) -> Ellipse:
    return Ellipse(e.cx, e.cy, e.a * f, e.b * f, e.angle)


def declared_non_obstetric(header: object | None) -> str | None:
    """Why a DICOM header declares a view with no foetal head in it, or ``None``.

    Reads what the scanner wrote, not the pixels: Image Type (0008,0008) value 3, the
    anatomic region of an ultrasound image, and Body Part Examined (0018,0015). A
    region or body part that is not in :data:`NON_OBSTETRIC_IMAGE_TYPES` or
    :data:`NON_OBSTETRIC_BODY_PARTS` (abdominal, pelvic, transvaginal, empty, a
    vendor's own term) declares nothing, and the image is measured.

    Args:
        header: A ``pydicom.Dataset`` (e.g. :attr:`fetalhead.image.LoadedImage.header`),
            or ``None`` for images that are not DICOM.

    Returns:
        A sentence naming the attribute and its value, or ``None``.

    """
    if header is None:
        return None
    image_type = getattr(header, "ImageType", None)
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    region = str(values[2]).strip().upper() if len(values) > 2 else ""
    if region in NON_OBSTETRIC_IMAGE_TYPES:
        return f"its Image Type (0008,0008) names the region {region}"
    part = str(getattr(header, "BodyPartExamined", "") or "").strip().upper()
    if part in NON_OBSTETRIC_BODY_PARTS:
        return f"its Body Part Examined (0018,0015) is {part}"
    return None


def head_features(
    image: NDArray[np.uint8],
    ellipse: Ellipse,
    contour: NDArray[np.float64],
    confidence: float,
    rms_px: float | None = None,
) -> dict[str, float]:
    """Scale-free features of a found head, from the image and the fit.

    Args:
        image: The grayscale image measured (original pixels).
        ellipse: The fitted ellipse (original pixels).
        contour: The boundary points the ellipse was fitted to.
        confidence: Mean head probability inside the head.
        rms_px: :func:`~fetalhead.geometry.ellipse.boundary_rms` of ``contour``, if the
            caller has it already.

    Returns:
        ``confidence``; ``log_fit_residual`` (log of the RMS distance of the
        boundary from the ellipse over the minor semi-axis, clipped to [-6, 1]);
        ``speckle`` (median local standard deviation inside the head over its mean
        level, clipped to 0.3: ultrasound is speckled, drawings are not);
        ``flat_fraction`` (share of pixels inside the head whose 3 x 3
        neighbourhood is constant); and ``gray_levels`` (distinct values inside the
        head / 256). Features are clipped to the range the envelope was fitted on.

    """
    img = image.astype(np.float32)
    h, w = img.shape
    minor = max(min(ellipse.a, ellipse.b), 1.0)
    inner = render_ellipse_mask(_ellipse_scaled(ellipse, 0.85), (h, w)).astype(bool)
    if not inner.any():
        return dict.fromkeys(FEATURES, 0.0) | {"confidence": float(confidence)}
    mean = cv2.blur(img, (5, 5))
    local_sd = np.sqrt(np.maximum(cv2.blur(img * img, (5, 5)) - mean * mean, 0.0))
    kernel = np.ones((3, 3), np.uint8)
    flat = cv2.dilate(image, kernel) == cv2.erode(image, kernel)
    inside = img[inner]
    rms = boundary_rms(ellipse, contour) if rms_px is None else rms_px
    if not math.isfinite(rms):
        rms = minor
    return {
        "confidence": float(confidence),
        "log_fit_residual": min(max(math.log(max(rms, 1e-6) / minor), -6.0), 1.0),
        "speckle": min(float(np.median(local_sd[inner]) / (inside.mean() + 1.0)), 0.3),
        "flat_fraction": float(flat[inner].mean()),
        "gray_levels": len(np.unique(image[inner])) / 256.0,
    }


#: The suspicious side of a feature.
Side = Literal["low", "high"]

#: Which side of each feature a non-head falls on: ``low`` values are suspicious for
#: confidence, speckle and grey levels, ``high`` ones for the fit residual and flatness.
SIDES: dict[str, Side] = {
    "confidence": "low",
    "log_fit_residual": "high",
    "speckle": "low",
    "flat_fraction": "high",
    "gray_levels": "low",
}


@dataclass(frozen=True)
class HCFloor:
    """A gate on the head's size in mm: below every foetal head of the fitting set.

    Set by the same rule as the image gates, halfway between the smallest reference
    HC of real heads (``edge_mm``) and the median HC that the pipeline reported for
    real ultrasound without a head below it (``gate_mm``; ``scripts/fit_hc_floor.py``).

    Attributes:
        gate_mm: A found head with a smaller HC is rejected.
        edge_mm: The smallest real head of the fitting set.
        provenance: How and on what the gate was set, and the measured error rates.

    """

    gate_mm: float
    edge_mm: float
    provenance: dict

    def margin(self, hc_mm: float) -> float:
        """1 at the edge of the real heads, 0 at the gate, negative below it."""
        return (hc_mm - self.gate_mm) / (abs(self.edge_mm - self.gate_mm) or 1e-9)


@dataclass(frozen=True)
class HeadRejector:
    """An envelope around foetal heads: a found head outside any gate is rejected.

    Each feature has a gate on its suspicious side, placed halfway between the
    most extreme foetal head of the fitting set (``edge``) and the median of the
    fitting non-heads beyond that edge (``scripts/fit_nonhead.py``). The score of
    an image is the smallest of its features' margins, each scaled so that 1 is
    the edge of the heads and 0 the gate: positive inside the envelope. Where the
    pixel size is known, the HC in mm has a gate too (:class:`HCFloor`, applied apart).

    Attributes:
        gates: Gate value per feature.
        edges: The fitting heads' extreme value per feature.
        provenance: How and on what the gates were set, and the measured error rates.
        hc_floor: The gate on HC in mm, if fitted.

    """

    gates: dict[str, float]
    edges: dict[str, float]
    provenance: dict
    hc_floor: HCFloor | None = None

    def score(self, features: dict[str, float]) -> float:
        """The smallest scaled margin of the image gates: > 0 inside the envelope of heads.

        :attr:`hc_floor` is applied apart, once the pixel size is final
        (``HeadMeasurer``), its margin joining this score.
        """
        margins = []
        for k, gate in self.gates.items():
            span = abs(self.edges[k] - gate) or 1e-9
            x = features[k]
            margins.append((x - gate) / span if SIDES[k] == "low" else (gate - x) / span)
        return float(min(margins, default=math.inf))

    def is_head(self, features: dict[str, float]) -> bool:
        """Whether the found head is kept by the image gates."""
        return self.score(features) > 0.0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        out = {
            "features": list(FEATURES),
            "gates": self.gates,
            "edges": self.edges,
            "provenance": self.provenance,
        }
        if self.hc_floor is not None:
            out["hc_floor"] = asdict(self.hc_floor)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> HeadRejector:
        """Build from :meth:`to_dict` output; the feature list must match this version's."""
        if tuple(d["features"]) != FEATURES:
            raise ValueError(f"rejector features {d['features']} differ from {list(FEATURES)}")
        floor = d.get("hc_floor")
        return cls(
            dict(d["gates"]),
            dict(d["edges"]),
            dict(d.get("provenance", {})),
            None if floor is None else HCFloor(**floor),
        )

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL) -> HeadRejector:
        """Load a fitted model (default: the shipped one)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def gate_between(
    heads: np.ndarray, non_heads: np.ndarray, side: Side
) -> tuple[float, float] | None:
    """``(edge, gate)`` of one feature, or ``None`` if no non-head lies beyond the heads.

    ``edge`` is the heads' extreme on ``side`` (``low`` or ``high``); ``gate`` lies
    halfway from it to the median non-head beyond it.
    """
    if side == "low":
        edge = float(heads.min())
        beyond = non_heads[non_heads < edge]
    else:
        edge = float(heads.max())
        beyond = non_heads[non_heads > edge]
    if beyond.size == 0:
        return None
    return edge, float(0.5 * (edge + np.median(beyond)))


def fit_envelope(heads: np.ndarray, non_heads: np.ndarray) -> tuple[dict, dict]:
    """Gates halfway between the heads' extreme and the median non-head beyond it.

    Args:
        heads: ``(n, len(FEATURES))`` features of foetal heads.
        non_heads: ``(m, len(FEATURES))`` features of regions found in non-heads.

    Returns:
        ``(gates, edges)`` keyed by feature name.

    """
    gates, edges = {}, {}
    for j, k in enumerate(FEATURES):
        found = gate_between(heads[:, j], non_heads[:, j], SIDES[k])
        if found is not None:  # else no non-head lies beyond the heads: no gate
            edges[k], gates[k] = found
    return gates, edges
