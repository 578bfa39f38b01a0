"""DICOM Structured Report: an OB-GYN Ultrasound Procedure Report (TID 5000) of a measurement.

The report is a Comprehensive SR whose content tree follows PS3.16 TID 5000:

- root CONTAINER (125000, DCM, "OB-GYN Ultrasound Procedure Report"), with the
  observer context of TID 1002: the observer is a device, fetalhead, named with
  its version and the SHA-256 of the weights;
- CONTAINER (125002, DCM, "Fetal Biometry") (TID 5005) holding one CONTAINER
  (125005, DCM, "Biometry Group") (TID 5008) per measurement type: HC
  (11984-2, LN), BPD (11820-8, LN) and OFD (11851-3, LN) in mm (UCUM);
- in the HC group, Gestational Age (18185-9, LN) in weeks with its Equation
  (121420, DCM) "HC, Hadlock 1984" (11932-1, LN);
- each measurement INFERRED FROM a SCOORD ELLIPSE (the fitted ellipse's axis
  end points, in the source frame's pixel coordinates) SELECTED FROM the source
  image (SOP Class and Instance UID, frame number).

PS3.16 has no code for the INTERGROWTH-21st HC dating equation, nor a
content item for a calibrated HC interval or fetalhead's qc, so these are plain
TEXT Comments (121106, DCM) in the HC group, each saying what it is.
Patient and study attributes are copied from the source; the SR gets new
Series and SOP Instance UIDs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid

from fetalhead import __version__
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.measure import Measurement

#: GA equation code: "HC, Hadlock 1984" (PS3.16 CID 12013).
HADLOCK_HC = codes.LN.HCHadlock1984
MM = codes.UCUM.Millimeter
WEEK = codes.UCUM.Week
#: Patient and study attributes copied from the source image.
COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


@dataclass(frozen=True)
class Review:
    """A sonographer's decision on a measurement.

    Attributes:
        decision: ``accepted`` or ``rejected``.
        operator: Who decided (free text, as typed in the review page).
        time: When (UTC).
        edited: Whether the ellipse was changed from the AI's.
        ai_hc_mm: The AI's HC, kept for the record.
        ai_bpd_mm: The AI's BPD.
        ai_ofd_mm: The AI's OFD.
        organization: Verifying organisation recorded with an accepted report.

    """

    decision: Literal["accepted", "rejected"]
    operator: str
    time: dt.datetime
    edited: bool
    ai_hc_mm: float | None = None
    ai_bpd_mm: float | None = None
    ai_ofd_mm: float | None = None
    organization: str = "fetalhead review"

    def statement(self) -> str:
        """The review in words, for a comment in the report."""
        ai = (
            f"AI values: HC {self.ai_hc_mm:.1f} mm, BPD {self.ai_bpd_mm:.1f} mm, "
            f"OFD {self.ai_ofd_mm:.1f} mm."
            if None not in (self.ai_hc_mm, self.ai_bpd_mm, self.ai_ofd_mm)
            else "No AI measurement."
        )
        how = "edited by the operator" if self.edited else "the AI's, unchanged"
        return (
            f"Reviewed: {self.decision} by {self.operator} at "
            f"{self.time.strftime('%Y-%m-%d %H:%M:%S')} UTC; the ellipse is {how}. {ai}"
        )


def _code(c: Code) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = (
        c.value,
        c.scheme_designator,
        c.meaning,
    )
    return ds


def _item(relationship: str | None, value_type: str, concept: Code | None) -> Dataset:
    ds = Dataset()
    if relationship:
        ds.RelationshipType = relationship
    ds.ValueType = value_type
    if concept is not None:
        ds.ConceptNameCodeSequence = Sequence([_code(concept)])
    return ds


def _text(relationship: str, concept: Code, text: str) -> Dataset:
    ds = _item(relationship, "TEXT", concept)
    ds.TextValue = text
    return ds


def _code_item(relationship: str, concept: Code, value: Code) -> Dataset:
    ds = _item(relationship, "CODE", concept)
    ds.ConceptCodeSequence = Sequence([_code(value)])
    return ds


def _num(concept: Code, value: float, unit: Code, children: Seq[Dataset] = ()) -> Dataset:
    ds = _item("CONTAINS", "NUM", concept)
    mv = Dataset()
    mv.NumericValue = f"{value:.8g}"  # DS holds at most 16 characters
    mv.FloatingPointValue = float(value)
    mv.MeasurementUnitsCodeSequence = Sequence([_code(unit)])
    ds.MeasuredValueSequence = Sequence([mv])
    if children:
        ds.ContentSequence = Sequence(list(children))
    return ds


def _container(relationship: str | None, concept: Code, children: Seq[Dataset]) -> Dataset:
    ds = _item(relationship, "CONTAINER", concept)
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(list(children))
    return ds


def _ellipse_item(e: Ellipse, source: Dataset, frame: int | None) -> Dataset:
    """SCOORD ELLIPSE: major-axis then minor-axis end points; (0, 0) is the top-left corner."""
    pts = []
    if e.a >= e.b:
        axes = ((e.a, e.angle), (e.b, e.angle + math.pi / 2))
    else:
        axes = ((e.b, e.angle + math.pi / 2), (e.a, e.angle))
    for semi, ang in axes:
        dx, dy = semi * math.cos(ang), semi * math.sin(ang)
        # fetalhead's pixel coordinates have 0 at the centre of the first pixel.
        pts += [e.cx - dx + 0.5, e.cy - dy + 0.5, e.cx + dx + 0.5, e.cy + dy + 0.5]
    ds = _item("INFERRED FROM", "SCOORD", codes.DCM.ImageRegion)
    ds.GraphicType = "ELLIPSE"
    ds.GraphicData = [float(v) for v in pts]
    image = _item("SELECTED FROM", "IMAGE", None)
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        ref.ReferencedFrameNumber = frame + 1
    image.ReferencedSOPSequence = Sequence([ref])
    ds.ContentSequence = Sequence([image])
    return ds


def _observer(weights_sha256: str | None) -> list[Dataset]:
    sha = weights_sha256 or "unknown"
    uid = generate_uid(entropy_srcs=["fetalhead", __version__, sha])
    ctx = [
        _code_item("HAS OBS CONTEXT", codes.DCM.ObserverType, codes.DCM.Device),
        _item("HAS OBS CONTEXT", "UIDREF", codes.DCM.DeviceObserverUID),
        _text("HAS OBS CONTEXT", codes.DCM.DeviceObserverName, "fetalhead"),
        _text("HAS OBS CONTEXT", codes.DCM.DeviceObserverManufacturer, "fetalhead developers"),
        _text(
            "HAS OBS CONTEXT",
            codes.DCM.DeviceObserverModelName,
            f"fetalhead {__version__}; weights SHA-256 {sha}",
        ),
        _text("HAS OBS CONTEXT", codes.DCM.AlgorithmName, "fetalhead Res-U-Net head biometry"),
        _text("HAS OBS CONTEXT", codes.DCM.AlgorithmVersion, f"{__version__} / {sha[:16]}"),
    ]
    ctx[1].UID = uid
    return ctx


def build_sr(
    source: Dataset,
    m: Measurement,
    *,
    weights_sha256: str | None = None,
    interval_level: float | None = None,
    now: dt.datetime | None = None,
    review: Review | None = None,
) -> Dataset:
    """The OB-GYN Ultrasound Procedure Report of one measured frame of ``source``.

    Args:
        source: The source image's DICOM header (pixel data not needed).
        m: Its measurement, with an ellipse and a pixel size.
        weights_sha256: SHA-256 of the weights, naming the observer device.
        interval_level: Coverage of ``m``'s HC interval, if it has one.
        now: Content date and time (default: now, UTC).
        review: A sonographer's decision on the measurement. An accepted report is
            VERIFIED, with the operator as verifying observer; whether the ellipse was
            edited, and the AI's values, are stated in comments.

    A frame where no head was measured still gets a report: its Fetal Biometry
    section then holds no numbers, only a comment with the reason (qc).

    Raises:
        InputError: If the source lacks the UIDs an SR must reference.

    """
    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        if not getattr(source, key, None):
            raise InputError(f"{m.filename}: the source has no {key}; an SR cannot reference it")
    now = now or dt.datetime.now(dt.UTC)
    image_shape = (int(getattr(source, "Rows", 0)), int(getattr(source, "Columns", 0)))
    same_grid = m.image_shape is None or tuple(m.image_shape) == image_shape
    ref = [_ellipse_item(m.ellipse, source, m.frame)] if same_grid and m.ellipse else []

    def group(concept: Code, value: float, extra: Seq[Dataset] = ()) -> Dataset:
        return _container(
            "CONTAINS", codes.DCM.BiometryGroup, [_num(concept, value, MM, ref), *extra]
        )

    hc_extra = []
    gh, gi = m.ga_hadlock, m.ga_intergrowth
    if gh is not None and math.isfinite(gh.weeks):
        hc_extra.append(
            _num(
                codes.LN.GestationalAge,
                gh.weeks,
                WEEK,
                [_code_item("HAS CONCEPT MOD", codes.DCM.Equation, HADLOCK_HC)],
            )
        )
        if not gh.in_range:
            hc_extra.append(
                _text(
                    "CONTAINS",
                    codes.DCM.Comment,
                    "Gestational age (HC, Hadlock 1984) lies outside the 14-42 weeks the "
                    "equation was derived on.",
                )
            )
    if gi is not None and math.isfinite(gi.weeks):
        hc_extra.append(
            _text(
                "CONTAINS",
                codes.DCM.Comment,
                f"Gestational age by the INTERGROWTH-21st HC equation (Papageorghiou et al. "
                f"2016): {gi.weeks_days} ({gi.days:.1f} days)"
                + ("" if gi.in_range else ", outside its 14+0 to 40+6 weeks")
                + ". Recorded as text: DICOM PS3.16 has no code for this equation.",
            )
        )
    if m.hc_low_mm is not None and m.hc_high_mm is not None:
        level = f"{interval_level:.0%} " if interval_level else ""
        hc_extra.append(
            _text(
                "CONTAINS",
                codes.DCM.Comment,
                f"HC {level}interval (fetalhead, split-conformal calibration): "
                f"{m.hc_low_mm:.1f} to {m.hc_high_mm:.1f} mm.",
            )
        )
    hc_extra.append(_text("CONTAINS", codes.DCM.Comment, f"fetalhead quality control: {m.qc}."))
    if review is not None:
        hc_extra.append(_text("CONTAINS", codes.DCM.Comment, review.statement()))
    if not same_grid:
        hc_extra.append(
            _text(
                "CONTAINS",
                codes.DCM.Comment,
                "Measured after resampling to square pixels; the ellipse is not drawn on "
                "the source grid.",
            )
        )
    if m.hc_mm is None or m.bpd_mm is None or m.ofd_mm is None:
        reason = m.error or m.qc
        content = [
            _text(
                "CONTAINS",
                codes.DCM.Comment,
                f"fetalhead measured no foetal head in this image ({reason}); no biometry "
                "is reported.",
            )
        ]
    else:
        content = [
            group(codes.LN.HeadCircumference, m.hc_mm, hc_extra),
            group(codes.LN.BiparietalDiameter, m.bpd_mm),
            group(codes.LN.OccipitalFrontalDiameter, m.ofd_mm),
        ]
    biometry = _container("CONTAINS", codes.DCM.FetalBiometry, content)
    root = [*_observer(weights_sha256), biometry]

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = generate_uid()
    for key in COPIED:
        if key in source:
            setattr(ds, key, source.data_element(key).value)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):  # fmt: skip
        if key not in ds:
            setattr(ds, key, "")
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer = "fetalhead developers"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    if review is not None and review.decision == "accepted":
        ds.VerificationFlag = "VERIFIED"
        observer = Dataset()
        observer.VerifyingObserverName = review.operator
        observer.VerifyingOrganization = review.organization
        observer.VerificationDateTime = review.time.strftime("%Y%m%d%H%M%S")
        observer.VerifyingObserverIdentificationCodeSequence = Sequence()
        ds.VerifyingObserverSequence = Sequence([observer])
    ds.PerformedProcedureCodeSequence = Sequence()
    evidence = Dataset()
    evidence.StudyInstanceUID = source.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = getattr(source, "SeriesInstanceUID", None) or generate_uid()
    sop = Dataset()
    sop.ReferencedSOPClassUID = source.SOPClassUID
    sop.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series.ReferencedSOPSequence = Sequence([sop])
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(codes.DCM.OBGYNUltrasoundProcedureReport)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "5000"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContentSequence = Sequence(root)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
