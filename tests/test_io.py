import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fetalhead.image import InputError
from fetalhead.readers import read_gray, read_image
from fetalhead.readers.tables import read_pixel_size_csv, validate_pixel_size
from fetalhead.write.atomic import atomic_writer


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("filename,pixel size(mm)\na.png,0.1\n", "a.png", 0.1),
        ("\ufefffilename,pixel size(mm)\r\na.png,0.1\r\n", "a.png", 0.1),
        ("filename;pixel size(mm)\na.png;0.25", "a.png", 0.25),
        ("filename\tpixel size(mm)\ta\na.png\t0.3\t1\n", "a.png", 0.3),
        ("filename,pixel size(mm),head circumference (mm)\nsub/a.png,0.1,44.3\n", "a.png", 0.1),
    ],
)
def test_pixel_csv_variants(tmp_path: Path, text: str, name: str, value: float) -> None:
    p = tmp_path / "px.csv"
    p.write_bytes(text.encode("utf-8"))
    assert read_pixel_size_csv(p).lookup(name) == pytest.approx(value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.png,-0.1", "positive"),
        ("a.png,nan", "positive"),
        ("a.png,abc", "not a number"),
        ("a.png,0", "positive"),
        ("a.png,", "not a number"),
    ],
)
def test_pixel_csv_bad_values_name_the_file(tmp_path: Path, row: str, message: str) -> None:
    p = tmp_path / "px.csv"
    p.write_text(f"filename,pixel size(mm)\n{row}\nb.png,0.2\n")
    table = read_pixel_size_csv(p)
    assert table.lookup("b.png") == 0.2
    with pytest.raises(InputError, match=message) as exc:
        table.lookup("a.png")
    assert "a.png" in str(exc.value)


def test_pixel_csv_missing_row_and_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "px.csv"
    p.write_text("filename,pixel size(mm)\na.png,0.1\na.png,0.1\nb.png,0.1\nb.png,0.2\n")
    t = read_pixel_size_csv(p)
    assert t.lookup("a.png") == 0.1
    with pytest.raises(InputError, match="b.png: listed twice"):
        t.lookup("b.png")
    with pytest.raises(InputError, match="c.png: not listed"):
        t.lookup("c.png")


def test_pixel_csv_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "px.csv"
    p.write_text("filename,size\na.png,0.1\n")
    with pytest.raises(InputError, match="px.csv: pixel-size CSV needs columns"):
        read_pixel_size_csv(p)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_pixel_size_csv(tmp_path / "empty.csv")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(lambda s: s.encode("utf-8")))
def test_fuzzed_csv_never_crashes(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.csv"
        p.write_bytes(b"filename,pixel size(mm)\n" + data)
        try:
            t = read_pixel_size_csv(p)
        except InputError:
            return
        for name in t.pixel_size_mm:
            assert t.lookup(name) > 0


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "x", None, 50])
def test_validate_pixel_size_rejects(value) -> None:
    with pytest.raises(InputError, match="img.png"):
        validate_pixel_size(value, "img.png")


def test_bad_image_files_have_clear_errors(tmp_path: Path) -> None:
    ok = write_png(tmp_path / "ok.png", np.full((60, 80), 100, np.uint8))
    data = ok.read_bytes()
    cases = {
        "empty.png": (b"", "empty"),
        "trunc.png": (data[: len(data) // 2], "cannot decode|not a readable"),
        "text.png": (b"hello, I am not an image\n" * 10, "not a readable image"),
    }
    for name, (content, msg) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=msg) as exc:
            read_image(tmp_path / name)
        assert name in str(exc.value)
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="directory"):
        read_image(tmp_path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300), np.uint8)).save(
        buf, "JPEG"
    )
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[:500])
    with pytest.raises(InputError, match="t.jpg"):
        read_image(tmp_path / "t.jpg")


def test_image_modes_become_uint8_gray(tmp_path: Path) -> None:
    g16 = (np.arange(100 * 120).reshape(100, 120) * 5).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    rgba = np.zeros((100, 120, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((100, 120), 7, np.uint8)).convert("P").save(tmp_path / "pal.png")
    for name in ("g16.png", "rgba.png", "pal.png"):
        g = read_gray(tmp_path / name)
        assert g.dtype == np.uint8 and g.shape == (100, 120), name
    assert read_gray(tmp_path / "g16.png").max() == 255


def test_size_limits(tmp_path: Path) -> None:
    write_png(tmp_path / "tiny.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(InputError, match="tiny.png: image is 1x1, smaller"):
        read_image(tmp_path / "tiny.png")
    # A 10000x10000 PNG compresses to a few hundred KB; it is refused before decoding.
    Image.new("L", (10000, 10000)).save(tmp_path / "huge.png")
    with pytest.raises(InputError, match="huge.png: image is 10000x10000, larger"):
        read_image(tmp_path / "huge.png")


def test_atomic_writer_keeps_old_file_on_crash(tmp_path: Path) -> None:
    p = tmp_path / "out.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_writer(p) as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]
    with atomic_writer(p) as fh:
        fh.write("new\n")
    assert p.read_text() == "new\n"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored raster 40 x 60 with a bright top-left corner; orientation 6 means "rotate
    # 90 degrees clockwise to display", so the image is shown 60 x 40, corner top-right.
    raster = np.zeros((40, 60), np.uint8)
    raster[:10, :10] = 255
    im = Image.fromarray(raster)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.png", exif=exif)
    g = read_gray(tmp_path / "rotated.png")
    assert g.shape == (60, 40)
    assert g[:10, -10:].min() == 255 and g[-10:, :10].max() == 0
