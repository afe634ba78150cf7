"""workflows/patch_check.py: the per-patch crack-or-no-crack scores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflows"))

import patch_check  # noqa: E402


def test_scores_count_patches_with_cracks_per_source() -> None:
    source = {
        "c1.png": "cracked-test",
        "c2.png": "cracked-test",
        "c3.png": "cracked-test",
        "c4.png": "cracked-test",
        "w1.png": "facade-walls",
        "w2.png": "facade-walls",
        "s1.png": "spb-val",
        "x1.png": "sceaux",
    }
    # three of four cracked patches found (one only 10 px), one wall and the Sceaux crop too
    found = {"c1.png": 300.0, "c2.png": 60.0, "c3.png": 10.0, "w1.png": 30.0, "x1.png": 80.0}
    out = patch_check.score(found, source, min_length_px=20.0)
    assert out["sources"]["cracked-test"] == {
        "patches": 4,
        "with_crack": 3,
        "over_min": 2,
        "mean_length_px": pytest.approx(92.5),
    }
    walls = out["held-out walls, any crack"]
    assert walls["recall"] == pytest.approx(0.75)
    assert walls["precision"] == pytest.approx(3 / 4)  # 3 true against 1 wall
    assert walls["false_positive_rate"] == pytest.approx(1 / 3) and walls["negatives"] == 3
    everything = out["all intact, >= 20 px"]
    assert everything["precision"] == pytest.approx(2 / 4)  # 2 true against wall and Sceaux
    assert everything["recall"] == pytest.approx(0.5)
    sweep = {row["min_length_px"]: row for row in out["sweep"]}
    assert sweep[0]["recall"] == pytest.approx(0.75)
    assert sweep[50]["recall"] == pytest.approx(0.5)
    assert sweep[50]["held_out_walls_called_cracked"] == 0.0


def test_balanced_precision_is_the_precision_of_a_set_with_as_many_cracked_as_intact() -> None:
    # 4 cracked patches (3 found) against 8 intact ones (2 called cracked): raw precision 3/5;
    # with 8 cracked patches at the same rates, 6 found against the same 2: 6/8
    source = {f"c{i}.png": "cracked-test" for i in range(4)}
    source |= {f"v{i}.png": "cracked-val" for i in range(4)}
    source |= {f"w{i}.png": "facade-walls" for i in range(8)}
    found = {"c0.png": 100.0, "c1.png": 100.0, "c2.png": 100.0, "v0.png": 100.0}
    found |= {"w0.png": 100.0, "w1.png": 100.0}
    walls = patch_check.score(found, source, min_length_px=20.0)["held-out walls, any crack"]
    assert walls["precision"] == pytest.approx(3 / 5)
    assert walls["balanced_precision"] == pytest.approx(6 / 8)
    # the validation patches as the cracked ones: recall 1/4, so 2 found against 2 intact
    assert walls["recall_val"] == pytest.approx(0.25)
    assert walls["balanced_precision_val"] == pytest.approx(0.5)
    assert patch_check.balanced_precision(0.0, 0.0) == 0.0
