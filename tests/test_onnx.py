import csv
import re

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, TINY, predict_cli

pytest.importorskip("onnxruntime")

from fetalhead.cli import main
from fetalhead.infer.onnx import OnnxBackend, export_onnx, read_onnx_metadata
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import DEFAULT_WEIGHTS, HeadMeasurer
from fetalhead.readers import read_gray


def test_export_matches_torch_and_carries_metadata(tmp_path) -> None:
    torch.manual_seed(0)
    ck = Checkpoint.from_model(ResUNet(TINY).eval(), {"data_note": "tiny"})
    diff = export_onnx(ck, tmp_path / "m.onnx")
    assert diff < 1e-4
    meta = read_onnx_metadata(tmp_path / "m.onnx")
    assert meta["fetalhead.architecture"] == "ResUNet"
    assert meta["fetalhead.input_hw"] == "[64, 96]"
    assert meta["fetalhead.normalisation"] == "divide_255"
    # Dynamic batch axis: batches of 1 and 3 both run.
    backend = OnnxBackend((tmp_path / "m.onnx").read_bytes())
    x = np.random.default_rng(0).random((3, 1, 64, 96), dtype=np.float32)
    assert backend(x).shape == (3, 64, 96) and backend(x[:1]).shape == (1, 64, 96)
    with torch.inference_mode():
        ref = torch.sigmoid(ck.build()(torch.from_numpy(x)))[:, 0].numpy()
    assert np.abs(backend(x) - ref).max() < 1e-5


def test_cli_export(tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert out.exists() and "max abs difference" in capsys.readouterr().out


def test_backends_agree_on_real_images_with_shipped_weights() -> None:
    images = sorted(EXAMPLES.glob("*_HC.png"))
    rows = {
        r["filename"]: float(r["pixel size(mm)"])
        for r in csv.DictReader(open(EXAMPLES / "pixel_size.csv"))
    }
    torch_m = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="torch")
    onnx_m = HeadMeasurer.from_pretrained(DEFAULT_WEIGHTS, backend="onnx")
    assert onnx_m.backend_name == "onnx"
    imgs = [read_gray(p) for p in images]
    px = [rows[p.name] for p in images]
    a = torch_m.measure_batch(imgs, px, [p.name for p in images])
    b = onnx_m.measure_batch(imgs, px, [p.name for p in images])
    for ra, rb in zip(a, b, strict=True):
        assert ra.qc == rb.qc
        if ra.hc_mm is not None:
            assert abs(ra.hc_mm - rb.hc_mm) < 0.1, ra.filename


def test_readme_main_job_gives_sensible_values(tmp_path, capsys) -> None:
    rc = predict_cli(
        [EXAMPLES],
        tmp_path / "out",
        DEFAULT_WEIGHTS,
        "--pixel-size-csv",
        str(EXAMPLES / "pixel_size.csv"),
        "--overlays",
    )
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 8
    for r in rows:
        assert r["qc"] != "no_head_found", r["filename"]
        assert 40 < float(r["hc_mm"]) < 400
        assert float(r["bpd_mm"]) < float(r["ofd_mm"])
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 8
    out = capsys.readouterr().out
    assert "HC mm" in out
    # GA is printed as clinicians read it, completed weeks and days (the CSV keeps decimals).
    assert re.search(r" \d{1,2}w\dd ", out), out
    assert all("." in r["ga_weeks_hadlock"] for r in rows)


def test_scale_input_exports_with_a_second_input_that_matches_torch(tmp_path) -> None:
    import dataclasses

    from fetalhead.infer.backends import TorchBackend

    torch.manual_seed(0)
    model = ResUNet(dataclasses.replace(TINY, scale_input=True)).eval()
    with torch.no_grad():
        for offset in model.scale_offsets:
            offset.weight.normal_()
    ck = Checkpoint.from_model(model)
    assert export_onnx(ck, tmp_path / "s.onnx") < 1e-4
    onnx_backend = OnnxBackend((tmp_path / "s.onnx").read_bytes())
    x = np.random.default_rng(1).random((2, 1, 64, 96), dtype=np.float32)
    mm = np.array([0.2, 0.7], np.float32)
    got = onnx_backend(x, mm)
    ref = TorchBackend(ck, channels_last=False)(x, mm)
    assert np.abs(got - ref).max() < 1e-5
    # The pixel size is read: the same images at other pixel sizes give other maps.
    assert np.abs(onnx_backend(x, mm[::-1].copy()) - got).max() > 1e-4
