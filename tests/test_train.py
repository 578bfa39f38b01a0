import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_mask_dataset
from fetalhead.cli import main as cli_main
from fetalhead.data import Case
from fetalhead.model import Checkpoint
from fetalhead.training import TrainConfig, train
from fetalhead.training.config import resolve_precision
from fetalhead.training.losses import (
    DISTANCE_WEIGHT,
    boundary_weights,
    compute_loss,
    dice_loss,
    distance_loss,
    signed_distance,
)
from fetalhead.training.samples import WeightedEpochSampler, trimester_weights

#: CLI options of the tiny synthetic runs (match tiny_config below).
TINY_CLI = [
    "--image-size",
    "64x96",
    "--start-filters",
    "2",
    "--val-fraction",
    "0.25",
    "--threads",
    "1",
    "--no-progress",
]


def tiny_config(data: Path, out: Path, epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=4,
        lr=3e-3,
        image_h=64,
        image_w=96,
        start_filters=2,
        dropout=0.1,
        val_fraction=0.25,
        num_threads=1,
        progress=False,
        warmup_steps=2,
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_mask_dataset(tmp_path_factory.mktemp("synth") / "data", 12)


def test_dice_loss_smooth_one() -> None:
    t = torch.zeros(1, 1, 4, 4)
    logits = torch.full((1, 1, 4, 4), -30.0)
    # Both empty: (0 + 1) / (0 + 1) = 1, so the loss is 0 with smooth = 1.
    assert float(dice_loss(logits, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_loss(-logits, t)) == pytest.approx(1 - 1 / 17, abs=1e-4)


def test_boundary_weights_band_of_three_pixels() -> None:
    t = torch.zeros(1, 1, 20, 20)
    t[..., 5:15, 5:15] = 1.0  # outline between columns 4 and 5, and 14 and 15
    w = boundary_weights(t)
    # Row 10: weight 5 within 3 pixels of either edge (columns 2-7 and 12-17), else 1.
    expected = [1, 1, 5, 5, 5, 5, 5, 5, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5, 1, 1]
    assert w[0, 0, 10].tolist() == [float(v) for v in expected]
    # A half-covered edge pixel (soft target) gives half the extra weight away from it.
    t2 = torch.zeros(1, 1, 9, 9)
    t2[..., 4] = 0.5
    assert w.shape == t.shape
    assert boundary_weights(t2)[0, 0, 4].tolist() == [1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0]


def test_boundary_loss_values() -> None:
    t = torch.zeros(1, 1, 20, 20)
    t[..., 5:15, 5:15] = 1.0
    # p = 0.5 everywhere: Dice (2 * 50 + 1) / (200 + 100 + 1), BCE ln 2 at any weight.
    flat = compute_loss(torch.zeros_like(t), t, "dice_bce_boundary")
    assert float(flat) == pytest.approx(1 - 101 / 301 + 0.6931472, abs=1e-5)
    # One wrong background pixel: its cross-entropy (12 nats) counts 5 times as much in
    # the band as far from it. The Dice part is the same for both and is taken out.
    good = torch.where(t > 0.5, 12.0, -12.0)
    in_band, far = good.clone(), good.clone()
    in_band[0, 0, 10, 3] = 12.0  # 2 pixels outside the outline
    far[0, 0, 0, 19] = 12.0  # a corner
    bce = [float(compute_loss(x, t, "dice_bce_boundary") - dice_loss(x, t)) for x in (in_band, far)]
    assert bce[0] / bce[1] == pytest.approx(5.0, rel=1e-3)
    with pytest.raises(ValueError, match="dice_bce_boundary"):
        TrainConfig(loss="focal")  # type: ignore[arg-type]


def test_cli_offers_every_loss() -> None:
    from typing import get_args

    from fetalhead import cli
    from fetalhead.training.config import LossName

    assert cli.LOSSES == get_args(LossName)


def test_signed_distance_of_a_square() -> None:
    t = torch.zeros(2, 1, 20, 20)
    t[0, :, 5:15, 5:15] = 1.0  # the second image has no head
    d = signed_distance(t)
    # Row 10: 2 and 1 pixels left of the head, its first pixel, the centre (5 pixels from
    # column 15 or row 15), and a corner 5 pixels off both edges: 5 * sqrt(2) - 0.5.
    assert d[0, 0, 10, 3] == pytest.approx(1.5)
    assert d[0, 0, 10, 4] == pytest.approx(0.5)
    assert d[0, 0, 10, 5] == pytest.approx(-0.5)
    assert d[0, 0, 10, 10] == pytest.approx(-4.5)
    assert d[0, 0, 0, 19] == pytest.approx(6.5710678, abs=1e-3)
    assert float(d[1].abs().max()) == 0.0


def test_distance_loss_charges_a_false_pixel_its_distance() -> None:
    t = torch.zeros(1, 1, 20, 20)
    t[..., 5:15, 5:15] = 1.0
    good = torch.where(t > 0.5, 12.0, -12.0)
    near, far = good.clone(), good.clone()
    near[0, 0, 10, 3] = 12.0  # 1.5 pixels outside
    far[0, 0, 0, 19] = 12.0  # 6.57 pixels outside
    base = float(distance_loss(good, t))
    extra = [float(distance_loss(x, t)) - base for x in (near, far)]
    flip = float(torch.sigmoid(torch.tensor(12.0)) - torch.sigmoid(torch.tensor(-12.0)))
    assert extra[0] == pytest.approx(1.5 * flip / 400, rel=1e-4)
    assert extra[1] == pytest.approx(6.5710678 * flip / 400, rel=1e-3)
    # In the training loss it is added with its weight to Dice and cross-entropy.
    total = compute_loss(far, t, "dice_bce_distance") - compute_loss(far, t, "dice_bce")
    assert float(total) == pytest.approx(DISTANCE_WEIGHT * float(distance_loss(far, t)), rel=1e-5)


def test_bce_loss_has_no_dice_term() -> None:
    t = torch.zeros(1, 1, 20, 20)
    t[..., 5:15, 5:15] = 1.0
    # p = 0.5 everywhere: ln 2 per pixel, where dice_bce adds 1 - 101 / 301 of Dice.
    assert float(compute_loss(torch.zeros_like(t), t, "bce")) == pytest.approx(0.6931472)
    assert float(compute_loss(torch.zeros_like(t), t, "dice_bce")) == pytest.approx(
        1 - 101 / 301 + 0.6931472, abs=1e-5
    )
    # One of the 400 pixels wrong at logit 12: ln(1 + e^12) / 400 = 12.0000061 / 400.
    x = torch.where(t > 0.5, 30.0, -30.0)
    x[0, 0, 0, 0] = 12.0
    assert float(compute_loss(x, t, "bce")) == pytest.approx(12.0000061 / 400, rel=1e-5)


def test_train_writes_logs_checkpoints_and_curves(synth, tmp_path) -> None:
    result = train(tiny_config(synth, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "log.csv", "curves.png", "config.yaml", "config.json"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_dice", "val_loss", "val_dice", "lr", "seconds"} <= set(rows[0])
    ck = Checkpoint.load(run / "best.pt")
    val = set(ck.meta["split"]["val_files"])
    train_names = {p.name for p in synth.glob("*_HC.png")} | {
        p.name for p in synth.glob("*_2HC.png")
    }
    train_names -= val
    assert val and {n[:3] for n in val}.isdisjoint({n[:3] for n in train_names})
    assert ck.config.input_hw == (64, 96)
    assert result.best_val_dice == max(float(r["val_dice"]) for r in rows)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(synth, run))


def test_a_run_on_every_image_has_no_validation_and_says_so(synth, tmp_path, capsys) -> None:
    # As the shipped weights are trained: val_fraction 0, all 12 cases in training,
    # the last weights kept; then a second stage from them, through the CLI.
    first = tmp_path / "all"
    args = [str(synth), "--out", str(first), "--epochs", "1", *TINY_CLI, "--val-fraction", "0"]
    assert cli_main(["train", *args]) == 0
    assert "no validation split: the last weights are final.pt" in capsys.readouterr().out
    split = Checkpoint.load(first / "final.pt").meta["split"]
    assert (split["n_train"], split["n_val"], split["val_files"]) == (12, 0, [])
    second = [str(synth), "--out", str(tmp_path / "ft"), "--epochs", "1", *TINY_CLI]
    second += ["--val-fraction", "0", "--init-weights", str(first / "final.pt")]
    assert cli_main(["train", *second]) == 0
    assert Checkpoint.load(tmp_path / "ft" / "final.pt").meta["split"]["n_train"] == 12


def test_fine_tune_starts_from_weights_and_refuses_a_different_split(synth, tmp_path) -> None:
    base = tmp_path / "base"
    train(tiny_config(synth, base, epochs=1))
    start = Checkpoint.load(base / "best.pt").state_dict

    # Through the CLI, with balanced sampling; a learning rate so small that the
    # weights stay where they started.
    args = [str(synth), "--out", str(tmp_path / "ft"), "--epochs", "1", "--lr", "1e-12"]
    args += ["--init-weights", str(base / "best.pt"), "--balance-trimesters", *TINY_CLI]
    assert cli_main(["train", *args]) == 0
    saved = Checkpoint.load(tmp_path / "ft" / "best.pt").meta["recipe"]
    assert saved["init_weights"] == str(base / "best.pt") and saved["balance_trimesters"]
    tuned = Checkpoint.load(tmp_path / "ft" / "best.pt").state_dict
    assert all(
        torch.allclose(start[k].float(), tuned[k].float(), atol=1e-6)
        for k in start
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )

    other = tiny_config(synth, tmp_path / "leak", epochs=1)
    other.init_weights = str(base / "best.pt")
    other.seed = 7  # a different prefix split: the start weights saw its validation images
    with pytest.raises(ValueError, match="validation files differ"):
        train(other)
    wider = tiny_config(synth, tmp_path / "wide", epochs=1)
    wider.init_weights = str(base / "best.pt")
    wider.start_filters = 4
    with pytest.raises(ValueError, match="does not match"):
        train(wider)


def test_trimester_weights_favour_rare_trimesters() -> None:
    # Hadlock: HC 80 mm ~ 13 wk (first), 200 mm ~ 22 wk (second), 300 mm ~ 33 wk (third).
    hcs = [80.0] * 10 + [200.0] * 80 + [300.0] * 10 + [None]
    cases = [Case(Path(f"{i:03d}_HC.png"), Path("x"), "hc18", 0.1, hc) for i, hc in enumerate(hcs)]
    w = trimester_weights(cases)
    assert w[0] == pytest.approx(w[90]) and w[0] == pytest.approx(w[10] * 8**0.5)
    third_share = w[90:100].sum() / w[:100].sum()
    assert 0.1 < third_share < 0.3  # up from 0.1 with sqrt balancing, not to 1/3
    assert w.mean() == pytest.approx(1.0)


def test_weighted_sampler_is_seeded_by_epoch_and_splits_ranks() -> None:
    w = np.array([1.0] * 9 + [5.0])
    ranks = [WeightedEpochSampler(w, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(4)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == len(ranks[0]) == 5
    again = WeightedEpochSampler(w, seed=3, rank=0, world=1)
    again.set_epoch(4)
    merged = list(again)
    assert merged[0::2] == a and merged[1::2] == b  # one draw, shared out by rank
    again.set_epoch(5)
    assert list(again) != merged
    many = WeightedEpochSampler(w, seed=0, rank=0, world=1)
    counts = np.zeros(10)
    for e in range(400):
        many.set_epoch(e)
        counts += np.bincount(list(many), minlength=10)
    assert counts[9] / counts[:9].mean() == pytest.approx(5.0, rel=0.15)


def test_config_file_and_unknown_keys(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.01\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml", epochs=5, lr=None)
    assert cfg.epochs == 5 and cfg.lr == 0.01
    (tmp_path / "b.toml").write_text("epoch = 3\n")
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_file(tmp_path / "b.toml")
    with pytest.raises(ValueError, match="loss must be"):
        TrainConfig(loss="focal")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_config_in_the_repository_loads(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    # Full runs, none a smoke test: the reference width, every image, and at least the
    # 4 epochs of the shortest fine-tuning stage (configs/cv5_shipped_stage3_ema.yaml).
    assert cfg.start_filters == 16 and cfg.max_images is None and cfg.epochs >= 4


def test_runs_are_deterministic_and_resume_exactly_after_kill(synth, tmp_path) -> None:
    epochs = 5
    ref = train(tiny_config(synth, tmp_path / "ref", epochs))
    again = train(tiny_config(synth, tmp_path / "again", epochs))
    assert [h.train_loss for h in ref.history] == [h.train_loss for h in again.history]

    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "fetalhead.cli",
        "train",
        str(synth),
        "--out",
        str(run),
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        *TINY_CLI,
        "--config",
        str(tmp_path / "c.yaml"),
    ]
    (tmp_path / "c.yaml").write_text("dropout: 0.1\nwarmup_steps: 2\n")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] < epochs, "the run finished before it could be killed"
    resumed = train(tiny_config(synth, run, epochs), resume=True)
    assert [h.epoch for h in resumed.history] == list(range(1, epochs + 1))
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_distributed_two_ranks_gloo(synth, tmp_path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fetalhead.cli",
        "train",
        str(synth),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        *TINY_CLI,
        "--device",
        "cpu",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("ranks in step: 2 ranks") == 2
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 2
    assert Checkpoint.load(run / "best.pt").meta["split"]["n_val"] >= 1


def test_fold_training_validates_on_its_fold_and_writes_final_weights(synth, tmp_path) -> None:
    from fetalhead.data import find_cases, kfold_by_prefix

    cfg = dataclasses.replace(tiny_config(synth, tmp_path / "f1", epochs=1), folds=3, fold=1)
    train(cfg)
    ck = Checkpoint.load(tmp_path / "f1" / "final.pt")
    _, val = kfold_by_prefix(find_cases(synth), 3, 1, cfg.seed)
    assert sorted(ck.meta["split"]["val_files"]) == sorted(c.image.name for c in val)
    assert ck.meta["split"]["folds"] == 3 and ck.meta["split"]["fold"] == 1
    assert ck.meta["split"]["method"] == "by 3-digit scan prefix, fold 1 of 3"


def test_split_seed_keeps_the_folds_when_the_training_seed_changes(synth) -> None:
    from fetalhead.training.loop import split_cases

    base = dataclasses.replace(tiny_config(synth, Path("unused")), folds=3, fold=1)
    again = dataclasses.replace(base, seed=1, split_seed=42)
    assert base.effective_split_seed == again.effective_split_seed == 42
    val_names = lambda cfg: sorted(c.image.name for c in split_cases(cfg)[1])  # noqa: E731
    assert val_names(again) == val_names(base)
    # Without split_seed, the seed draws the folds too: seed 1 holds out other prefixes.
    moved = dataclasses.replace(base, seed=1)
    assert moved.effective_split_seed == 1
    assert val_names(moved) == ["003_2HC.png", "003_HC.png", "004_2HC.png", "004_HC.png"]
    assert val_names(base) == ["000_2HC.png", "000_HC.png", "001_2HC.png", "001_HC.png"]


def test_precision_and_fold_options_are_checked() -> None:
    with pytest.raises(ValueError, match="precision must be"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(folds=5)
    with pytest.raises(ValueError, match="0 <= fold < folds"):
        TrainConfig(folds=5, fold=5)
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) is None
    assert resolve_precision("bfloat16", cpu) is torch.bfloat16


def test_auto_precision_follows_the_cpu(monkeypatch) -> None:
    from fetalhead.training import config as train_mod

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_mod, "native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(train_mod, "native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16


def test_validation_adf_is_the_evaluated_adf(tmp_path) -> None:
    """Training validation scores HC with predict's post-processing, as evaluate does."""
    from conftest import MINI, OracleBackend
    from fetalhead.data import find_cases, label_ellipse
    from fetalhead.evaluate import evaluate
    from fetalhead.geometry.ellipse import Ellipse
    from fetalhead.model import ModelConfig, ResUNet
    from fetalhead.predict import HeadMeasurer
    from fetalhead.readers import read_gray
    from fetalhead.training.loop import reference_hc_mm, val_hc_errors

    cfg = TrainConfig(image_h=192, image_w=288)
    net = ModelConfig(start_filters=2, dropout=0.0, input_hw=(192, 288))
    cases = find_cases(MINI)
    shapes = [read_gray(c.image).shape for c in cases]
    # Maps of ellipses 3 % too large in a, 1 % too small in b: a known, non-zero error.
    wrong = [
        Ellipse(e.cx + 2, e.cy - 1, e.a * 1.03, e.b * 0.99, e.angle)
        for e in (label_ellipse(c) for c in cases)
    ]
    probs = OracleBackend(wrong, shapes, net)(np.zeros((len(cases), 1, 192, 288), np.float32))
    logged = val_hc_errors(
        probs, [reference_hc_mm(c) for c in cases], [c.pixel_size_mm for c in cases], cfg, shapes
    )
    m = HeadMeasurer(Checkpoint.from_model(ResUNet(net)), backend="torch", tta=False)
    m.backend = OracleBackend(wrong, shapes, net)
    s = evaluate(m, MINI, tmp_path / "ev", split="all", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    assert [float(r["adf_mm"]) for r in rows] == pytest.approx(logged, abs=1e-9)
    assert s["adf_mm"]["mean"] == pytest.approx(float(np.mean(logged)), abs=1e-9)
    assert min(logged) > 0.3  # the error is really there


def test_deep_supervision_and_boundary_loss_train_through_the_cli(synth, tmp_path) -> None:
    rc = cli_main(
        ["train", str(synth), "--out", str(tmp_path / "ds"), "--epochs", "1", "--batch-size", "4",
         "--deep-supervision", "--loss", "dice_bce_boundary", *TINY_CLI]
    )  # fmt: skip
    assert rc == 0
    ck = Checkpoint.load(tmp_path / "ds" / "final.pt")
    assert ck.config.deep_supervision and any(k.startswith("aux_heads.") for k in ck.state_dict)
    assert ck.meta["recipe"]["loss"] == "dice_bce_boundary"


def test_cross_validation_script_runs_a_second_stage_from_each_folds_last_weights(
    synth, tmp_path
) -> None:
    common = "batch_size: 4\nimage_h: 64\nimage_w: 96\nstart_filters: 2\nwarmup_steps: 2\n"
    (tmp_path / "s1.yaml").write_text(f"epochs: 1\n{common}")
    (tmp_path / "s2.yaml").write_text(f"epochs: 1\nlr: 0.0003\nbalance_trimesters: true\n{common}")
    script = Path(__file__).parents[1] / "scripts" / "cross_validate.py"
    for stage, extra in (("s1", []), ("s2", ["--init-from", str(tmp_path / "s1")])):
        subprocess.run(
            [sys.executable, str(script), str(synth), "--out", str(tmp_path / stage),
             "--config", str(tmp_path / f"{stage}.yaml"), "--folds", "2", "--only", "0", *extra],
            check=True, capture_output=True,
        )  # fmt: skip
    first = Checkpoint.load(tmp_path / "s1" / "fold0" / "final.pt")
    second = Checkpoint.load(tmp_path / "s2" / "fold0" / "final.pt")
    assert second.meta["recipe"]["init_weights"] == str(tmp_path / "s1" / "fold0" / "final.pt")
    held_out = sorted(first.meta["split"]["val_files"])
    assert sorted(second.meta["split"]["val_files"]) == held_out and len(held_out) >= 4
    maps = np.load(tmp_path / "s2" / "fold0" / "heldout_maps.npz")
    assert sorted(maps["names"].tolist()) == held_out
    assert maps["plain"].shape == (len(held_out), 64, 96)


def test_scale_range_is_checked_and_read_from_yaml(tmp_path) -> None:
    from fetalhead.training import TrainConfig

    cfg = tmp_path / "c.yaml"
    cfg.write_text("scale_range: [0.6, 1.15]\n")
    assert TrainConfig.from_file(cfg).scale_range == (0.6, 1.15)
    assert TrainConfig().scale_range == (0.85, 1.15)
    with pytest.raises(ValueError, match="scale_range"):
        TrainConfig(scale_range=(1.2, 0.9))
    with pytest.raises(ValueError, match="crop_fraction"):
        TrainConfig(crop_fraction=1.5)
    cfg.write_text("negative_fraction: 0.3\n")
    assert TrainConfig.from_file(cfg).negative_fraction == 0.3
    with pytest.raises(ValueError, match="negative_fraction"):
        TrainConfig(negative_fraction=1.0)  # nothing but negatives teaches no head


def test_weight_average_is_saved_beside_the_last_weights_and_resumes_exactly(
    synth, tmp_path, monkeypatch
) -> None:
    from fetalhead.training import loop

    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    cfg = lambda out: dataclasses.replace(tiny_config(synth, out, 3), ema_decay=0.9)  # noqa: E731
    train(cfg(tmp_path / "ref"))
    last = Checkpoint.load(tmp_path / "ref" / "final.pt")
    avg = Checkpoint.load(tmp_path / "ref" / "final_ema.pt")
    assert avg.config == last.config and avg.meta["split"] == last.meta["split"]
    assert avg.meta["averaged"]["ema_decay"] == 0.9 and "averaged" not in last.meta
    assert set(avg.state_dict) == set(last.state_dict)
    # An average of the steps, not the last step: weights and BatchNorm statistics differ.
    assert not torch.equal(avg.state_dict["down.0.0.weight"], last.state_dict["down.0.0.weight"])
    running = [k for k in last.state_dict if k.endswith("running_mean")]
    assert running and not torch.equal(avg.state_dict[running[0]], last.state_dict[running[0]])
    # The same training without the average ends in the same last weights.
    train(tiny_config(synth, tmp_path / "plain", 3))
    plain = Checkpoint.load(tmp_path / "plain" / "final.pt")
    assert all(torch.equal(plain.state_dict[k], last.state_dict[k]) for k in last.state_dict)
    assert not (tmp_path / "plain" / "final_ema.pt").exists()
    # A run without the average cannot be resumed with one: there is none to go on from.
    with pytest.raises(ValueError, match="without ema_decay"):
        train(cfg(tmp_path / "plain"), resume=True)

    # Stopped after epoch 2 and resumed, the average is the uninterrupted one.
    real = loop._train_epoch

    def stop_at_3(run, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(run, epoch)

    monkeypatch.setattr(loop, "_train_epoch", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "stopped"))
    monkeypatch.setattr(loop, "_train_epoch", real)
    train(cfg(tmp_path / "stopped"), resume=True)
    again = Checkpoint.load(tmp_path / "stopped" / "final_ema.pt")
    assert all(torch.equal(again.state_dict[k], avg.state_dict[k]) for k in avg.state_dict)


def test_zoom_of_reads_the_area_scale_of_the_affine_step() -> None:
    import albumentations as A

    from fetalhead.training.samples import zoom_of

    image, mask = np.zeros((64, 96), np.uint8), np.zeros((64, 96), np.float32)
    zoom = A.Compose([A.Affine(scale=1.25, rotate=30, p=1.0)], save_applied_params=True)
    assert zoom_of(zoom(image=image, mask=mask)["applied_transforms"]) == pytest.approx(1.25)
    # Anisotropic: the geometric mean of the two axes' zooms.
    aniso = A.Compose([A.Affine(scale={"x": 2.0, "y": 0.5}, p=1.0)], save_applied_params=True)
    assert zoom_of(aniso(image=image, mask=mask)["applied_transforms"]) == pytest.approx(1.0)
    flip = A.Compose([A.HorizontalFlip(p=1.0)], save_applied_params=True)
    assert zoom_of(flip(image=image, mask=mask)["applied_transforms"]) == 1.0


def test_samples_carry_mm_per_network_pixel_divided_by_the_zoom(synth) -> None:
    import albumentations as A

    from fetalhead.data import CachedCases, find_cases
    from fetalhead.training.samples import HeadDataset

    cache = CachedCases(find_cases(synth)[:2], (64, 96))
    # 135x200 images at 0.2 mm letterboxed into 64x96: 95x64 pixels inside the canvas.
    expected = 0.2 / np.sqrt((95 / 200) * (64 / 135))
    assert cache.mm_per_pixel[0] == pytest.approx(expected) == pytest.approx(0.42146, abs=1e-5)
    x, mm, y = HeadDataset(cache, None)[0]
    assert x.shape == y.shape == (1, 64, 96) and float(mm) == pytest.approx(expected)
    zoom = A.Compose([A.Affine(scale=2.0, p=1.0)], save_applied_params=True)
    assert float(HeadDataset(cache, zoom)[0][1]) == pytest.approx(expected / 2)


def test_hard_negatives_train_and_are_recorded(synth, tmp_path) -> None:
    # The dataset refuses negatives from a cache built without them, so a run that
    # finishes had its cache's boxes clear of the head built.
    cfg = dataclasses.replace(tiny_config(synth, tmp_path / "n", epochs=1), negative_fraction=0.5)
    train(cfg)
    assert Checkpoint.load(tmp_path / "n" / "final.pt").meta["recipe"]["negative_fraction"] == 0.5


def test_scale_input_trains_and_its_checkpoint_needs_the_pixel_size(synth, tmp_path) -> None:
    cfg = dataclasses.replace(tiny_config(synth, tmp_path / "s", epochs=1), scale_input=True)
    train(cfg)
    ck = Checkpoint.load(tmp_path / "s" / "final.pt")
    assert ck.config.scale_input and ck.meta["recipe"]["scale_input"] is True
    offsets = [v for k, v in ck.state_dict.items() if k.startswith("scale_offsets.")]
    assert len(offsets) == 10 and any(float(v.abs().max()) > 0 for v in offsets)
    with pytest.raises(ValueError, match="crop_fraction"):
        TrainConfig(scale_input=True, crop_fraction=0.5)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(scale_input=True, ema_decay=0.99)
