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
