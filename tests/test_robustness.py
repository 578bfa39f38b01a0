"""Nothing is lost: interrupted predict runs resume, checkpoints survive kill -9."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import TINY, predict_cli, synthetic_scan
from fetalhead.cli import main
from fetalhead.geometry.ellipse import Ellipse
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.predict import HeadMeasurer


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(60):
        img, _ = synthetic_scan(Ellipse(200, 135, 70 + i % 20, 50, 0.1 * i), seed=i)
        cv2.imwrite(str(root / f"{i:03d}_HC.png"), img)
    return root


def rows_of(path: Path) -> list[dict[str, str]]:
    text = path.read_text()
    assert text.endswith("\n"), "partial last line"
    rows = list(csv.DictReader(text.splitlines()))
    for r in rows:
        assert r["qc"], r
    return rows


@pytest.mark.parametrize(
    ("sig", "processes"),
    [
        (signal.SIGTERM, 1),
        (signal.SIGINT, 1),
        (signal.SIGKILL, 1),
        (signal.SIGTERM, 2),
        (signal.SIGKILL, 2),
    ],
)
def test_interrupted_predict_resumes_without_loss(
    folder, tiny_checkpoint, tmp_path, sig, processes
) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "fetalhead.cli", "predict", str(folder), "--out", str(out),
        "--pixel-size", "0.1", "--weights", str(tiny_checkpoint), "--backend", "torch",
        "--batch-size", "1", "--threads", str(processes), "--no-progress", "--quiet",
        "--overlays", "--processes", str(processes),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pred = out / "predictions.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pred.exists() and pred.read_text().count("\n") >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the run finished before it was interrupted"
    if sig != signal.SIGKILL:
        assert "rerun with --resume" in err and "Traceback" not in err
    first = rows_of(pred)
    assert 0 < len(first) < 60
    assert main([*cmd[3:-2], "--processes", "1", "--resume"]) == 0
    final = rows_of(pred)
    names = [r["filename"] for r in final]
    assert sorted(names) == sorted(f"{i:03d}_HC.png" for i in range(60))
    assert len(set(names)) == 60
    assert final[: len(first)] == first


def test_resume_drops_a_partial_last_line(folder, tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "o"
    args = [
        "predict",
        str(folder / "000_HC.png"),
        str(folder / "001_HC.png"),
        "--out",
        str(out),
        "--pixel-size",
        "0.1",
        "--weights",
        str(tiny_checkpoint),
        "--no-progress",
        "--quiet",
    ]
    assert main(args) == 0
    pred = out / "predictions.csv"
    lines = pred.read_text().splitlines(keepends=True)
    pred.write_text("".join(lines[:2]) + lines[2][:10])  # as a kill mid-write would leave it
    assert main([*args, "--resume"]) == 0
    assert [r["filename"] for r in rows_of(pred)] == ["000_HC.png", "001_HC.png"]


WRITER = """
import sys, torch
from fetalhead.model import Checkpoint, ModelConfig, ResUNet
m = ResUNet(ModelConfig(start_filters=8))
i = 0
while True:
    i += 1
    Checkpoint.from_model(m, {"i": i}).save(sys.argv[1])
    print(i, flush=True)
"""


def test_kill_during_checkpoint_write_keeps_last_good(tmp_path) -> None:
    path = tmp_path / "last.pt"
    rng = np.random.default_rng(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
        proc.stdout.readline()  # at least one complete write
        time.sleep(float(rng.uniform(0.0, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ck = Checkpoint.load(path)
        assert ck.meta["i"] >= 1
        assert set(ck.state_dict) == set(ResUNet(ck.config).state_dict())


def test_many_blobs_and_noise(tmp_path) -> None:
    # Blank images under synthetic maps: the non-head check is off (test_plausibility.py).
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(TINY)), backend="torch", reject_non_heads=False)
    h, w = TINY.input_hw
    noise = np.random.default_rng(0).random((1, h, w)).astype(np.float32)
    m.backend = lambda batch: np.repeat(noise, len(batch), axis=0)
    r = m.measure(np.zeros((270, 400), np.uint8), 0.1)
    # Salt-and-pepper probabilities are never a confident head.
    assert r.qc != "ok"
    blobs = np.zeros((1, h, w), np.float32)
    blobs[0, 10:20, 10:20] = 1
    blobs[0, 30:60, 40:90] = 1
    m.backend = lambda batch: np.repeat(blobs, len(batch), axis=0)
    r = m.measure(np.zeros((270, 400), np.uint8), 0.1)
    assert r.ellipse is not None and r.ellipse.cx > 150  # the larger blob


def test_unreadable_file_permissions(tiny_checkpoint, tmp_path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    p = tmp_path / "in"
    p.mkdir()
    f = p / "locked.png"
    f.write_bytes(b"x")
    f.chmod(0)
    assert predict_cli([p], tmp_path / "o", tiny_checkpoint, "--pixel-size", "0.1") == 1


def test_weights_only_loading_rejects_pickled_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "fetalhead-checkpoint/1", "x": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable fetalhead checkpoint"):
        Checkpoint.load(path)


def test_permission_denied_is_a_clear_error(monkeypatch, tmp_path) -> None:
    from fetalhead.image import InputError
    from fetalhead.readers import read_image

    f = tmp_path / "locked.png"
    f.write_bytes(b"x")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(InputError, match="locked.png: cannot read file \\(Permission denied\\)"):
        read_image(f)
