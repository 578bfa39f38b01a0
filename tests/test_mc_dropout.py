"""benchmarks/mc_dropout.py: the held-out heads measured with the dropout layers sampling."""

import math

import pytest
import torch

from conftest import load_benchmark
from fetalhead.model import ModelConfig, ResUNet


def load():
    return load_benchmark("mc_dropout")


def test_only_the_dropout_layers_sample() -> None:
    module = load()
    model = ResUNet(ModelConfig(start_filters=4, depth=2, input_hw=(32, 32))).eval()
    module.sample_dropout(model, True)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert dropouts and norms
    assert all(m.training for m in dropouts)
    assert not any(m.training for m in norms)
    module.sample_dropout(model, False)
    assert not any(m.training for m in dropouts)


def test_spearman_of_monotone_and_reversed_ranks() -> None:
    module = load()
    a = torch.tensor([0.1, 0.4, 0.2, 0.9]).numpy()
    assert module.spearman(a, a**3) == pytest.approx(1.0)
    assert module.spearman(a, -a) == pytest.approx(-1.0)


def test_the_report_pairs_the_mean_map_with_the_plain_pass() -> None:
    module = load()
    # Three second-trimester heads of 200 mm measured at 202 mm (plain) and 201 mm
    # (mean of the dropout maps); a fourth without a head in the mean map is left out.
    rows = [
        {"prefix": p, "trimester": "second", "hc_ref_mm": 200.0, "hc_plain_mm": 202.0,
         "hc_mcmean_mm": 201.0, "mc_rel": 0.01 * i}
        for i, p in enumerate(("001", "002", "003"), start=1)
    ] + [{"prefix": "004", "trimester": "third", "hc_ref_mm": 300.0, "hc_plain_mm": 290.0,
          "hc_mcmean_mm": math.nan, "mc_rel": 0.5}]  # fmt: skip
    lines = module.report(rows).splitlines()
    assert lines[0] == "3 of 4 images with a head found by the plain pass and the mean map."
    assert (
        lines[4]
        == "| plain (shipped) | 2.00 (2.00 to 2.00) | +0.00 (+0.00 to +0.00) | - | 2.00 | - |"
    )
    assert lines[5] == (
        "| mean of the dropout maps | 1.00 (1.00 to 1.00) | -1.00 (-1.00 to -1.00) | - | 1.00 | - |"
    )
