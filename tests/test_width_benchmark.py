"""workflows/width_benchmark.py's error budget: what ``--oracle`` gives the width measurement."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
sys.path.insert(0, str(WORKFLOWS))

import width_benchmark  # noqa: E402


def _mae(oracle: str) -> tuple[float, int]:
    args = argparse.Namespace(n_cracks=6, seed=3, oracle=oracle)
    textures = width_benchmark.load_textures(["brick"], Path("/nonexistent"))
    records = width_benchmark.run_mode_a(args, textures)
    true = np.array([r["true_px"] for r in records])
    got = np.array([r["width_px"] for r in records])
    sel = (true >= 1.5) & np.isfinite(got)
    return float(np.mean(np.abs(got[sel] - true[sel]))), len(records)


def test_oracles_draw_the_same_cracks_and_the_truth_helps() -> None:
    """Every oracle measures the same samples of the same cracks (its draws do not shift the
    random stream), and knowing the wall and the blur makes the width more accurate."""
    none, n_none = _mae("none")
    both, n_both = _mae("wall+sigma")
    flat, n_flat = _mae("flat")
    assert n_none == n_both == n_flat > 100
    assert both < none
    assert flat < none


def test_oracle_is_refused_outside_mode_a(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        width_benchmark.main(["--mode", "b", "--oracle", "wall"])
    assert "--oracle wall applies to --mode a only" in capsys.readouterr().err


def test_seeds_are_pooled_with_their_own_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """``--seeds`` runs each seed as ``--seed`` would, prints a row per seed, then pools them
    (crack ids kept apart: two seeds' crack 0 are two cracks)."""
    args = ["--mode", "a", "--n-cracks", "3", "--textures", "brick", "--data", "/nonexistent"]
    width_benchmark.main([*args, "--seeds", "0,1"])
    out = capsys.readouterr().out
    assert "| seed 0, all >= 1.5 px |" in out and "| seed 1, all >= 1.5 px |" in out
    assert "6 cracks" in out and "All seeds pooled" in out
    width_benchmark.main([*args, "--seed", "1"])
    alone = capsys.readouterr().out
    row = next(line for line in alone.splitlines() if line.startswith("| **all >= 1.5 px**"))
    assert row.replace("**all >= 1.5 px**", "seed 1, all >= 1.5 px") in out
