"""Averaging the weights of two fine-tunes (training/checkpoints.average_checkpoints)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY
from fetalhead.model import Checkpoint, ResUNet
from fetalhead.training.checkpoints import average_checkpoints

ROOT = Path(__file__).parents[1]


def filled(value: float, batches: int) -> Checkpoint:
    """A tiny checkpoint whose floating tensors all hold ``value``."""
    state = ResUNet(TINY).state_dict()
    for k, v in state.items():
        state[k] = torch.full_like(v, value if v.is_floating_point() else batches)
    return Checkpoint(TINY, state, {"data_note": "tiny"})


def test_average_is_the_mean_of_floats_and_keeps_the_first_counters() -> None:
    avg = average_checkpoints([filled(1.0, 5), filled(4.0, 9)], ["a.pt", "b.pt"])
    for k, v in avg.state_dict.items():
        if v.is_floating_point():
            assert torch.equal(v, torch.full_like(v, 2.5)), k
        else:
            assert torch.equal(v, torch.full_like(v, 5)), k
    assert avg.meta["weight_average"] == {"sources": ["a.pt", "b.pt"], "n": 2}
    assert avg.meta["data_note"] == "tiny"
    avg.build()  # loads into the architecture


def test_average_refuses_one_checkpoint_or_other_architectures() -> None:
    with pytest.raises(ValueError, match="two or more"):
        average_checkpoints([filled(1.0, 1)], ["a.pt"])
    wider = dataclasses.replace(TINY, start_filters=4)
    other = Checkpoint(wider, ResUNet(wider).state_dict(), {})
    with pytest.raises(ValueError, match="b.pt: architecture"):
        average_checkpoints([filled(1.0, 1), other], ["a.pt", "b.pt"])


def test_script_writes_a_loadable_average(tmp_path: Path) -> None:
    filled(2.0, 1).save(tmp_path / "a.pt")
    filled(6.0, 3).save(tmp_path / "b.pt")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "average_weights.py"), str(tmp_path / "a.pt"),
         str(tmp_path / "b.pt"), "--out", str(tmp_path / "avg.pt")],
        check=True, capture_output=True,
    )  # fmt: skip
    avg = Checkpoint.load(tmp_path / "avg.pt")
    w = next(v for v in avg.state_dict.values() if v.is_floating_point())
    assert torch.equal(w, torch.full_like(w, 4.0))
    assert avg.meta["weight_average"]["n"] == 2
