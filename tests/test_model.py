import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from conftest import TINY
from fetalhead.model import Checkpoint, ModelConfig, ResUNet, count_parameters, fold_batchnorm


def test_reference_size_parameter_count() -> None:
    model = ResUNet(ModelConfig(start_filters=16))
    assert count_parameters(model) == pytest.approx(5.1e6, rel=0.02)


@pytest.mark.parametrize("hw", [(64, 96), (32, 32)])
def test_output_shape(hw) -> None:
    model = ResUNet(ModelConfig(start_filters=2, input_hw=hw)).eval()
    with torch.inference_mode():
        y = model(torch.rand(2, 1, *hw))
    assert y.shape == (2, 1, *hw)


def test_dropout_layout_matches_reference() -> None:
    model = ResUNet(ModelConfig(start_filters=2, dropout=0.5))
    assert [d.p for d in model.drop_down] == [0.25, 0.5, 0.5, 0.5]
    assert [isinstance(d, torch.nn.Dropout) for d in model.drop_up] == [True, True, False, False]


def test_invalid_config_is_explained() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        ModelConfig(input_hw=(100, 100))
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ResUNet(TINY).eval()
    path = tmp_path / "m.pt"
    Checkpoint.from_model(model, {"metrics": {"val_dice": 0.5}, "data_note": "x"}).save(path)
    ck = Checkpoint.load(path)
    assert ck.config == TINY and ck.meta["metrics"]["val_dice"] == 0.5
    x = torch.rand(1, 1, *TINY.input_hw)
    with torch.inference_mode():
        assert torch.equal(model(x), ck.build()(x))


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not a fetalhead checkpoint"):
        Checkpoint.load(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        Checkpoint.load(junk)


def _output_dtypes(
    model: ResUNet, x: torch.Tensor, bf16: bool = False
) -> tuple[torch.Tensor, dict[str, torch.dtype]]:
    seen: dict[str, torch.dtype] = {}
    named = {"stem": model.down[0][0], "first": model.down[0][2], "bridge": model.bridge[2]}
    named["last"] = model.up_levels[-1]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, out.dtype))
        for k, m in named.items()
    ]
    with torch.inference_mode():
        y = model.forward_bf16(x) if bf16 else model(x)
    for h in hooks:
        h.remove()
    return y, seen


def test_bf16_inference_keeps_the_first_convolution_and_its_stream_in_float32() -> None:
    torch.manual_seed(0)
    model = ResUNet(TINY).eval()
    x = torch.rand(2, 1, *TINY.input_hw)
    ref, ref_dtypes = _output_dtypes(model, x)
    y, dtypes = _output_dtypes(model, x, bf16=True)
    assert set(ref_dtypes.values()) == {torch.float32}
    assert dtypes == {
        "stem": torch.float32,
        "first": torch.float32,
        "bridge": torch.bfloat16,
        "last": torch.bfloat16,
    }
    assert y.dtype == torch.float32
    assert torch.allclose(torch.sigmoid(y), torch.sigmoid(ref), atol=0.05)


def test_plain_forward_leaves_an_outer_autocast_in_force() -> None:
    """Training under AMP wraps forward in autocast; the bf16 switch must not undo it."""
    model = ResUNet(TINY).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, dtypes = _output_dtypes(model, torch.rand(1, 1, *TINY.input_hw))
    assert dtypes["stem"] == dtypes["bridge"] == torch.bfloat16


def test_batchnorm_folding_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = ResUNet(TINY)
    # Non-trivial running statistics, as after training.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(2, 1, *TINY.input_hw)
    with torch.inference_mode():
        ref = model(x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(copy.deepcopy(model))
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert left == n_bn - 2 * (2 * TINY.depth + 1)  # one per residual block
    with torch.inference_mode():
        assert torch.allclose(folded(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="inference"):
        fold_batchnorm(ResUNet(TINY).train())


def test_deep_supervision_heads_train_and_vanish_in_evaluation() -> None:
    cfg = ModelConfig(start_filters=2, dropout=0.0, input_hw=(64, 96), deep_supervision=True)
    model = ResUNet(cfg).train()
    x = torch.rand(2, 1, 64, 96)
    logits, aux = model(x)
    # Three coarser decoder levels (strides 8, 4, 2), upsampled, finest first.
    assert logits.shape == (2, 1, 64, 96) and [a.shape for a in aux] == [(2, 1, 64, 96)] * 3
    assert len(model.aux_heads) == 3
    # In evaluation the auxiliary heads do nothing: the same weights without them give the
    # same output.
    model.eval()
    plain = ResUNet(ModelConfig(start_filters=2, dropout=0.0, input_hw=(64, 96))).eval()
    missing = plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("aux_heads.")}
    )
    assert not missing.missing_keys and plain.aux_heads is None
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


def test_deep_supervision_checkpoint_round_trip(tmp_path) -> None:
    cfg = ModelConfig(start_filters=2, dropout=0.0, input_hw=(64, 96), deep_supervision=True)
    Checkpoint.from_model(ResUNet(cfg)).save(tmp_path / "ds.pt")
    ck = Checkpoint.load(tmp_path / "ds.pt")
    assert ck.config.deep_supervision and isinstance(
        ck.build()(torch.rand(1, 1, 64, 96)), torch.Tensor
    )


def test_shipped_weights_describe_themselves() -> None:
    from fetalhead.predict import DEFAULT_WEIGHTS

    ck = Checkpoint.load(DEFAULT_WEIGHTS)
    meta = ck.meta
    # Trained on all 904 images; the recipe's accuracy is its 5-fold cross-validation.
    assert (meta["split"]["n_train"], meta["split"]["n_val"]) == (904, 0)
    assert meta["split"]["val_files"] == []
    assert meta["cross_validation"]["folds"] == [f"fold{k}" for k in range(5)]
    # benchmarks/results/shipped_cv5/report.md: ADF 2.32 mm over the 904 held-out images.
    assert meta["cross_validation"]["accuracy"]["plain"]["adf_mm"][0] == pytest.approx(
        2.32, abs=0.005
    )
    prior = meta["inference"].pop("shape_prior")
    assert meta["inference"] == {
        "tta": False,
        "level": 0.6,
        "level_by_band": {"first": 0.55, "second": 0.55, "third": 0.6},
    }
    assert meta["cross_validation"]["level_by_band"]["levels"] == meta["inference"]["level_by_band"]
    # benchmarks/results/aspect_prior/report.md: weights 0.3 / 0.1 / 0.1, axis ratios
    # 0.828 / 0.787 / 0.798, chosen on all five folds.
    assert {b: p["weight"] for b, p in prior.items()} == {"first": 0.3, "second": 0.1, "third": 0.1}
    assert [round(prior[b]["ratio"], 3) for b in ("first", "second", "third")] == [
        0.828,
        0.787,
        0.798,
    ]
    assert meta["cross_validation"]["shape_prior"]["prior"] == prior
    assert {"hc_interval", "qc_flag"} <= set(meta["calibration"])
    assert all(m["learned"] is not None for m in meta["calibration"]["hc_interval"])
    recipes = meta["cross_validation"]["recipes"]["comparisons"]
    # The shipped two-stage recipe, cross-validated on folds 0-1 (361 held-out images).
    assert recipes["shipped_recipe"]["folds"] == [0, 1] and recipes["shipped_recipe"]["n"] == 361
    assert {"reference", "float32", "deep_supervision", "boundary"} <= set(recipes)


def test_scale_code_is_the_log_ratio_to_0_38_mm() -> None:
    from fetalhead.model import scale_code

    code = scale_code(torch.tensor([0.38, 0.76, 0.19]))
    assert code.shape == (3, 1)
    assert torch.allclose(code[:, 0], torch.tensor([0.0, 0.693147, -0.693147]), atol=1e-6)
    with pytest.raises(ValueError, match="positive and finite"):
        scale_code(torch.tensor([0.3, float("nan")]))
    with pytest.raises(ValueError, match="positive and finite"):
        scale_code(torch.tensor([-0.1]))


def test_scale_input_starts_as_the_plain_network_and_then_reads_the_pixel_size() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, scale_input=True)
    model = ResUNet(cfg).eval()
    plain = ResUNet(TINY).eval()
    loaded = plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("scale_offsets.")}
    )
    assert not loaded.missing_keys and len(model.scale_offsets) == 5  # 4 levels + bridge
    x = torch.rand(2, 1, *TINY.input_hw)
    mm = torch.tensor([0.2, 0.6])
    with torch.inference_mode():
        # The offsets start at zero: the same function as the plain network.
        assert torch.equal(model(x, mm), plain(x))
        assert torch.equal(model.forward_bf16(x, mm), plain.forward_bf16(x))
    with torch.no_grad():
        for offset in model.scale_offsets:
            offset.weight.fill_(1.0)
    with torch.inference_mode():
        a = model(x[:1].repeat(2, 1, 1, 1), mm)
        assert not torch.allclose(a[0], a[1])  # one image, two pixel sizes
        assert torch.equal(model(x, torch.full((2,), 0.38)), plain(x))  # code 0: no offset
    with pytest.raises(ValueError, match="pass mm_per_pixel"):
        model(x)
    with pytest.raises(ValueError, match="2 images but 1 pixel sizes"):
        model(x, torch.tensor([0.3]))


def test_scale_input_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, scale_input=True)
    model = ResUNet(cfg).eval()
    with torch.no_grad():
        model.scale_offsets[0].bias.fill_(0.5)
    Checkpoint.from_model(model).save(tmp_path / "s.pt")
    ck = Checkpoint.load(tmp_path / "s.pt")
    x, mm = torch.rand(1, 1, *TINY.input_hw), torch.tensor([0.3])
    with torch.inference_mode():
        assert ck.config.scale_input and torch.equal(ck.build()(x, mm), model(x, mm))


def test_parse_hw_reads_square_and_rectangular_sizes() -> None:
    from fetalhead.model import parse_hw

    assert parse_hw("224") == (224, 224)
    assert parse_hw("192x288") == (192, 288)
    assert parse_hw("192X288") == (192, 288)
    for bad in ("", "192x", "ax3", "1x2x3"):
        with pytest.raises(ValueError, match="expected H or HxW"):
            parse_hw(bad)
