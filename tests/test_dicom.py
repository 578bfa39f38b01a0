import csv
from pathlib import Path

import numpy as np
import pytest
from pydicom import examples
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

from conftest import TINY, OracleBackend, predict_cli, synthetic_scan
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.image import InputError
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer
from fetalhead.readers import read_image
from fetalhead.spacing import resolve_pixel_size, square_pixels


def region(x0, y0, x1, y1, dx_cm, dy_cm, ux=3, uy=3, fmt=1, dtype=1) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType = fmt, dtype
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = ux, uy
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
    return r


def make_dicom(path: Path, img: np.ndarray, regions=(), pixel_spacing=None, pixels=True) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = img.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence(list(regions))
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if pixels:
        ds.PixelData = np.ascontiguousarray(img, np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_palette_color_example_is_calibrated_from_region() -> None:
    frames = read_image(examples.get_path("palette_color"))
    assert len(frames) == 1 and frames[0].frame is None
    f = frames[0]
    assert f.pixels.shape == (350, 800) and f.pixels.dtype == np.uint8
    s = resolve_pixel_size("palette_color", f)
    assert s.spacing_mm == pytest.approx((0.26229, 0.26229), rel=1e-4)
    assert s.source == "dicom-region"


def test_ybr_multiframe_example() -> None:
    frames = read_image(examples.get_path("ybr_color"))
    assert len(frames) == 30 and [f.frame for f in frames[:3]] == [0, 1, 2]
    assert {f.n_frames for f in frames} == {30}
    s = resolve_pixel_size("ybr_color", frames[0])
    assert frames[0].pixels.ndim == 2 and s.source == "dicom-region"
    assert s.spacing_mm[1] == pytest.approx(0.5105, rel=1e-3)


def test_dicom_detected_by_content_without_suffix(tmp_path) -> None:
    img, _ = synthetic_scan(Ellipse(200, 135, 80, 60, 0.3))
    p = make_dicom(tmp_path / "IM0001", img, [region(0, 0, 399, 269, 0.01, 0.01)])
    f = read_image(p)[0]
    assert resolve_pixel_size("IM0001", f).spacing_mm == pytest.approx((0.1, 0.1))
    assert np.array_equal(f.pixels, img)


def test_pixel_spacing_fallback_and_non_spatial_units(tmp_path) -> None:
    img = np.zeros((100, 120), np.uint8)
    p = make_dicom(
        tmp_path / "a.dcm", img, [region(0, 0, 119, 99, 0.01, 0.5, uy=4)], pixel_spacing=[0.2, 0.3]
    )
    f = read_image(p)[0]
    s = resolve_pixel_size("a.dcm", f)
    # Pixel Spacing is (row, column), as the array axes.
    assert s.source == "dicom-pixel-spacing" and s.spacing_mm == pytest.approx((0.2, 0.3))


def test_non_square_pixels_are_resampled(tmp_path, caplog) -> None:
    img = np.zeros((100, 120), np.uint8)
    p = make_dicom(tmp_path / "a.dcm", img, [region(0, 0, 119, 99, 0.01, 0.02)])
    f = read_image(p)[0]
    s = resolve_pixel_size("a.dcm", f)
    assert s.spacing_mm == pytest.approx((0.2, 0.1))
    pixels, px, row_scale = square_pixels(f.pixels, s, "a.dcm")
    assert "non-square" in caplog.text
    assert pixels.shape == (200, 120) and px == pytest.approx(0.1) and row_scale == 2.0


def test_several_regions_pick_the_one_with_the_head(tmp_path) -> None:
    e = Ellipse(300, 135, 70, 50, 0.3)
    img, _ = synthetic_scan(e)
    regions = [
        region(0, 0, 199, 269, 0.01, 0.01),
        region(200, 0, 399, 269, 0.02, 0.02),
        region(0, 200, 399, 269, 0.05, 0.05, fmt=4, dtype=10),
    ]
    p = make_dicom(tmp_path / "two.dcm", img, regions)
    loaded = read_image(p)[0]
    # The largest 2-D tissue region first.
    assert resolve_pixel_size("two.dcm", loaded).spacing_mm == pytest.approx((0.1, 0.1))
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch")
    # Measured first with the default region, then again with the head's region.
    m.backend = OracleBackend([e, e], [img.shape] * 2, TINY)
    r = m.measure(loaded, filename="two.dcm")
    assert r.pixel_size_mm == pytest.approx(0.2) and r.pixel_size_source == "dicom-region"
    assert r.qc == "ok"
    assert r.hc_mm == pytest.approx(e.perimeter * 0.2, rel=0.01)


def test_bad_dicoms(tmp_path) -> None:
    img = np.zeros((100, 120), np.uint8)
    nopix = make_dicom(tmp_path / "nopix.dcm", img, pixels=False)
    with pytest.raises(InputError, match="nopix.dcm: DICOM file has no pixel data"):
        read_image(nopix)
    full = make_dicom(tmp_path / "full.dcm", img).read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(full[: len(full) - 5000])
    with pytest.raises(InputError, match="trunc.dcm"):
        read_image(tmp_path / "trunc.dcm")
    (tmp_path / "head.dcm").write_bytes(full[:140])
    with pytest.raises(InputError, match="head.dcm"):
        read_image(tmp_path / "head.dcm")


def test_uncalibrated_dicom_is_never_measured_in_pixels(tiny_checkpoint, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_dicom(src / "nocal.dcm", np.zeros((100, 120), np.uint8))
    make_dicom(src / "cal.dcm", np.zeros((100, 120), np.uint8), [region(0, 0, 119, 99, 0.01, 0.01)])
    rc = predict_cli([src], tmp_path / "o", tiny_checkpoint, "--backend", "torch")
    assert rc == 0
    rows = {r["filename"]: r for r in csv.DictReader(open(tmp_path / "o" / "predictions.csv"))}
    assert rows["nocal.dcm"]["qc"] == "no_pixel_size"
    assert "nocal.dcm: no pixel size" in rows["nocal.dcm"]["error"]
    assert rows["cal.dcm"]["pixel_size_source"] == "dicom-region"
    assert float(rows["cal.dcm"]["pixel_size_mm"]) == pytest.approx(0.1)


def test_cli_multiframe_rows_have_frames(tiny_checkpoint, tmp_path) -> None:
    rc = predict_cli(
        [examples.get_path("ybr_color")], tmp_path / "o", tiny_checkpoint, "--backend", "torch"
    )
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))
    assert [r["frame"] for r in rows] == [str(i) for i in range(30)]
    assert {r["pixel_size_source"] for r in rows} == {"dicom-region"}
