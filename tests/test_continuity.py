"""Tests for cracksurvey.measure.continuity: CPP on hand-made masks, continuity statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cracksurvey.measure.continuity import (
    continuity_stats,
    count_fragments,
    cracks_per_patch,
    patch_origins,
)


def blobs_patch():
    m = np.zeros((256, 256), bool)
    m[10:18, 10:18] = True  # 64 px
    m[100:108, 50:58] = True  # 64 px
    m[200:210, 200:205] = True  # 50 px (kept: >=)
    m[50:52, 150:155] = True  # 10 px (dropped)
    return m


def test_cpp_counts_fragments_above_min_area():
    assert cracks_per_patch(blobs_patch()).tolist() == [3]
    assert cracks_per_patch(blobs_patch(), min_area_px=0).tolist() == [4]
    assert cracks_per_patch(blobs_patch(), min_area_px=51).tolist() == [2]


def test_cpp_crack_crossing_border_counts_in_both_patches():
    m = np.zeros((256, 512), bool)
    m[100:103, 200:320] = True  # 56 * 3 and 64 * 3 px on either side of col 256
    assert cracks_per_patch(m).tolist() == [1, 1]
    assert patch_origins(m.shape).tolist() == [[0, 0], [0, 256]]


def test_cpp_partial_border_patch_rule():
    assert patch_origins((256, 384)).tolist() == [[0, 0], [0, 256]]  # 50 % inside: counted
    assert patch_origins((256, 383)).tolist() == [[0, 0]]
    assert patch_origins((100, 100)).shape == (0, 2)
    assert cracks_per_patch(np.ones((100, 100), bool)).shape == (0,)


def test_cpp_valid_mask_selects_patches_and_pixels():
    m = np.zeros((256, 512), bool)
    m[100:103, 200:320] = True
    valid = np.zeros_like(m)
    valid[:, :300] = True  # right patch 44/256 inside -> not counted
    assert patch_origins(m.shape, valid=valid).tolist() == [[0, 0]]
    assert cracks_per_patch(m, valid=valid).tolist() == [1]
    valid[:, 240:256] = False  # crack pixels outside valid are ignored
    valid[:, 200:240] = False
    assert cracks_per_patch(m, valid=valid).tolist() == [0]


def test_cpp_connectivity():
    m = np.zeros((256, 256), bool)
    m[10:20, 10:20] = True
    m[20:30, 20:30] = True  # touches diagonally only
    assert cracks_per_patch(m, connectivity=8).tolist() == [1]
    assert cracks_per_patch(m, connectivity=4).tolist() == [2]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    patch=st.integers(5, 40),
    # sparse masks too: only the patches that hold a crack pixel are labelled
    density=st.one_of(st.just(0.0), st.floats(0.0005, 0.01), st.floats(0.05, 0.6)),
    connectivity=st.sampled_from([4, 8]),
    min_area=st.integers(0, 12),
)
def test_cpp_row_labelling_equals_labelling_each_patch(
    seed, shape, patch, density, connectivity, min_area
):
    """The fast path (a row of patches labelled at once, kept apart by blank columns) counts
    exactly what labelling every patch on its own counts, partial edge patches and valid
    masks included."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    valid = rng.random(shape) < 0.9
    fast = cracks_per_patch(
        mask, patch_px=patch, min_area_px=min_area, connectivity=connectivity, valid=valid
    )
    m = mask & valid
    # the counted patches: at least half of patch**2 pixels valid, checked patch by patch
    origins = [
        [r, c]
        for r in range(0, shape[0], patch)
        for c in range(0, shape[1], patch)
        if 2 * int(valid[r : r + patch, c : c + patch].sum()) >= patch * patch
    ]
    assert patch_origins(shape, patch_px=patch, valid=valid).tolist() == origins
    slow = [
        count_fragments(
            m[r : r + patch, c : c + patch],
            connectivity=connectivity,
            min_area_px=min_area,
            min_skeleton_length_px=None,
        )
        for r, c in patch_origins(shape, patch_px=patch, valid=valid)
    ]
    assert fast.tolist() == slow


def test_cpp_min_skeleton_length():
    m = np.zeros((256, 256), bool)
    m[10, 10:31] = True  # 21 px -> length 20
    m[50, 10:15] = True  # 5 px -> length 4
    m[100:106, 100:106] = np.eye(6, dtype=bool)  # diagonal, length 5 * sqrt(2) = 7.07
    m[150:160, 150:152] = True  # 2 x 10 bar: Zhang skeleton is 8 px in a column -> length 7
    assert cracks_per_patch(m, min_area_px=0).tolist() == [4]
    assert cracks_per_patch(m, min_area_px=0, min_skeleton_length_px=7).tolist() == [3]
    assert cracks_per_patch(m, min_area_px=0, min_skeleton_length_px=7.05).tolist() == [2]
    assert cracks_per_patch(m, min_area_px=0, min_skeleton_length_px=7.08).tolist() == [1]
    assert cracks_per_patch(m, min_area_px=0, min_skeleton_length_px=20).tolist() == [1]
    assert cracks_per_patch(m, min_area_px=0, min_skeleton_length_px=20.01).tolist() == [0]
    # both rules apply: the 21-px line has area 21 < 50
    assert cracks_per_patch(m, min_skeleton_length_px=7).tolist() == [0]


# ------------------------------------------------------------------------------ continuity


def test_continuity_stats():
    s = continuity_stats([1.0, 2.0, 1.0])
    assert s == {
        "n_cracks": 3,
        "total_length_m": 4.0,
        "fragments_per_m": 0.75,
        "mean_length_m": 4 / 3,
        "largest_share": 0.5,
    }
    empty = continuity_stats([])
    assert empty == {
        "n_cracks": 0,
        "total_length_m": 0.0,
        "fragments_per_m": 0.0,
        "mean_length_m": 0.0,
        "largest_share": 0.0,
    }
    assert continuity_stats(np.zeros(2))["n_cracks"] == 2
    with pytest.raises(ValueError, match="lengths_m"):
        continuity_stats([1.0, -1.0])
    with pytest.raises(ValueError, match="lengths_m"):
        continuity_stats([math.nan])
