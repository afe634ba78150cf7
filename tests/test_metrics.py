"""Tests for cracksurvey.evaluation.metrics: hand-made masks with exact expected counts, plus invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.morphology import skeletonize
from test_continuity import blobs_patch

from cracksurvey.evaluation.metrics import (
    RelaxedCounts,
    aggregate,
    betti0_error,
    cldice,
    cpp_summary,
    relaxed_counts,
    tube_dice,
)


def line(shape=(30, 50), row=10, cols=(5, 45)):
    """1-px horizontal line on ``row`` over ``cols[0] <= col < cols[1]``."""
    m = np.zeros(shape, bool)
    m[row, cols[0] : cols[1]] = True
    return m


def counts_tuple(c: RelaxedCounts):
    return (c.tp_pred, c.fp, c.tp_gt, c.fn, c.n_pred, c.n_gt)


# ------------------------------------------------------------------------------ relaxed counts


def test_identical_thick_masks_are_perfect():
    gt = np.zeros((30, 50), bool)
    gt[9:12, 5:45] = True
    c = relaxed_counts(gt, gt)
    assert c.n_pred == c.n_gt == skeletonize(gt).sum() > 0
    assert (c.fp, c.fn) == (0, 0)
    assert c.correctness == c.completeness == c.quality == c.f1 == 1.0


def test_shift_within_slack_is_correct():
    gt = line(row=10)
    c = relaxed_counts(line(row=13), gt)
    assert counts_tuple(c) == (40, 0, 40, 0, 40, 40)
    assert c.correctness == 1.0 and c.completeness == 1.0


def test_slack_is_inclusive():
    c = relaxed_counts(line(row=15), line(row=10), slack_px=5)
    assert c.correctness == 1.0
    c = relaxed_counts(line(row=15), line(row=10), slack_px=4.99)
    assert c.correctness == 0.0


def test_shift_beyond_slack_is_wrong():
    c = relaxed_counts(line(row=18), line(row=10))
    assert counts_tuple(c) == (0, 40, 0, 40, 40, 40)
    assert c.correctness == c.completeness == c.quality == c.f1 == 0.0


def test_gap_exact_counts_and_variants_differ():
    gt = line(cols=(5, 45))  # 40 px, cols 5..44
    pred = line(cols=(5, 20)) | line(cols=(35, 45))  # 15 + 10 px, gap cols 20..34
    w = relaxed_counts(pred, gt)
    # GT cols 5..24 are within 5 of col 19, cols 30..44 within 5 of col 35 -> 35 matched
    assert counts_tuple(w) == (25, 0, 35, 5, 25, 40)
    assert w.correctness == 1.0
    assert w.completeness == 35 / 40
    assert w.quality == 35 / 40
    assert w.f1 == pytest.approx(2 * 0.875 / 1.875)
    a = relaxed_counts(pred, gt, variant="authors")
    assert counts_tuple(a) == counts_tuple(w)
    assert a.completeness == 25 / 30
    assert a.quality == 25 / 30


def test_longer_prediction_variants_differ_in_quality():
    gt = line(cols=(5, 25))  # 20 px
    pred = line(cols=(5, 45))  # 40 px, cols 5..29 within 5 of GT
    w = relaxed_counts(pred, gt)
    assert counts_tuple(w) == (25, 15, 20, 0, 40, 20)
    assert (w.correctness, w.completeness, w.quality) == (25 / 40, 1.0, 20 / 35)
    a = relaxed_counts(pred, gt, variant="authors")
    assert (a.correctness, a.completeness, a.quality) == (25 / 40, 1.0, 25 / 40)


def test_empty_prediction():
    c = relaxed_counts(np.zeros((30, 50), bool), line())
    assert counts_tuple(c) == (0, 0, 0, 40, 0, 40)
    assert c.ratios() == {"correctness": None, "completeness": 0.0, "quality": 0.0, "f1": 0.0}


def test_empty_gt_has_no_phantom_point():
    # docs/method.md, D19: scipy's EDT of an all-True array measures to a point outside the top-left corner,
    # which would match a prediction drawn in the corner.
    pred = line(row=0, cols=(0, 6))
    c = relaxed_counts(pred, np.zeros((30, 50), bool))
    assert counts_tuple(c) == (0, 6, 0, 0, 6, 0)
    assert c.ratios() == {"correctness": 0.0, "completeness": None, "quality": 0.0, "f1": 0.0}


def test_both_empty_all_undefined():
    z = np.zeros((30, 50), bool)
    for variant in ("wiedemann", "authors"):
        c = relaxed_counts(z, z, variant=variant)
        assert set(c.ratios().values()) == {None}


def test_skeletonizes_in_2d_for_band_axis():
    m = np.zeros((1, 20, 30), bool)
    m[0, 5:15, 3:27] = True
    c = relaxed_counts(m, m)
    assert c.n_pred == skeletonize(m[0]).sum()
    assert c.n_pred != skeletonize(m).sum()  # Lee's 3-D thinning gives another skeleton


def test_input_validation():
    with pytest.raises(TypeError, match="tau"):
        relaxed_counts(np.zeros((5, 5), np.float32), np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="shapes"):
        relaxed_counts(np.zeros((5, 5), bool), np.zeros((5, 6), bool))
    with pytest.raises(ValueError, match="variant"):
        relaxed_counts(
            np.zeros((5, 5), bool),
            np.zeros((5, 5), bool),
            variant="x",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="slack"):
        relaxed_counts(np.zeros((5, 5), bool), np.zeros((5, 5), bool), slack_px=-1)


# ------------------------------------------------------------------------------ aggregate


def test_aggregate_micro_macro_exact():
    z = np.zeros((30, 50), bool)
    gap = relaxed_counts(line(cols=(5, 20)) | line(cols=(35, 45)), line())  # (25,0,35,5)
    fp_only = relaxed_counts(line(row=0, cols=(0, 6)), z)  # (0,6,0,0)
    empty = relaxed_counts(z, z)
    res = aggregate([gap, fp_only, empty])
    assert res["n_images"] == 3 and res["n_both_empty"] == 1
    assert res["counts"] == {"tp_pred": 25, "fp": 6, "tp_gt": 35, "fn": 5, "n_pred": 31, "n_gt": 40}
    assert res["micro"]["correctness"] == 25 / 31
    assert res["micro"]["completeness"] == 35 / 40
    assert res["micro"]["quality"] == 35 / 46
    c, m = 25 / 31, 35 / 40
    assert res["micro"]["f1"] == pytest.approx(2 * c * m / (c + m))
    assert res["macro"]["correctness"] == 0.5  # mean(1, 0)
    assert res["macro"]["completeness"] == 0.875  # gap only
    assert res["macro"]["quality"] == pytest.approx((0.875 + 0.0) / 2)
    assert res["macro"]["f1"] == pytest.approx((2 * 0.875 / 1.875 + 0.0) / 2)
    assert res["macro_n_excluded"] == {"correctness": 1, "completeness": 2, "quality": 1, "f1": 1}

    perfect = aggregate([gap, fp_only, empty], empty="perfect")
    assert perfect["macro"]["correctness"] == pytest.approx(2 / 3)
    assert perfect["macro"]["completeness"] == pytest.approx((0.875 + 1) / 2)
    assert perfect["macro_n_excluded"]["completeness"] == 1
    assert perfect["micro"] == res["micro"]


def test_aggregate_no_nan_when_everything_empty():
    z = np.zeros((8, 8), bool)
    res = aggregate([relaxed_counts(z, z)] * 2)
    assert set(res["micro"].values()) == {None}
    assert set(res["macro"].values()) == {None}
    assert aggregate([])["n_images"] == 0


def test_aggregate_refuses_mixed_variants():
    g = line()
    with pytest.raises(ValueError, match="variants"):
        aggregate([relaxed_counts(g, g), relaxed_counts(g, g, variant="authors")])


def test_aggregate_authors_variant():
    res = aggregate(
        [relaxed_counts(line(cols=(5, 20)) | line(cols=(35, 45)), line(), variant="authors")]
    )
    assert res["variant"] == "authors"
    assert res["micro"]["completeness"] == 25 / 30


# ------------------------------------------------------------------------------ CPP against GT


def test_cpp_summary_with_gt():
    gt = np.zeros((256, 512), bool)
    gt[100:103, 20:200] = True  # one GT crack in the left patch
    pred = gt.copy()
    pred[:, 100:110] = False  # a gap: 2 fragments
    pred[50:60, 400:410] = True  # false-positive blob in the right patch
    s = cpp_summary(pred, gt)
    assert s["n_patches"] == 2
    assert s["cpp_pred"] == {"mean": 1.5, "median": 1.5, "histogram": [0, 1, 1]}
    assert s["cpp_gt"] == {"mean": 0.5, "median": 0.5, "histogram": [1, 1]}
    assert s["delta_mean"] == 1.0 and s["abs_delta_mean"] == 1.0
    assert s["with_gt_crack"] == {
        "n_patches": 1,
        "cpp_pred_mean": 2.0,
        "cpp_gt_mean": 1.0,
        "delta_mean": 1.0,
        "abs_delta_mean": 1.0,
    }
    assert s["without_gt_crack"] == {
        "n_patches": 1,
        "cpp_pred_mean": 1.0,
        "cpp_gt_mean": 0.0,
        "delta_mean": 1.0,
        "abs_delta_mean": 1.0,
    }


def test_cpp_summary_without_gt_and_without_patches():
    s = cpp_summary(blobs_patch())
    assert s["cpp_pred"] == {"mean": 3.0, "median": 3.0, "histogram": [0, 0, 0, 1]}
    assert "cpp_gt" not in s
    s = cpp_summary(np.zeros((10, 10), bool), np.zeros((10, 10), bool))
    assert s["n_patches"] == 0
    assert s["cpp_pred"] == {"mean": None, "median": None, "histogram": []}
    assert s["delta_mean"] is None and s["without_gt_crack"]["n_patches"] == 0


# ------------------------------------------------------------------------------ topology


def test_cldice_cases():
    a = line()
    assert cldice(a, a) == 1.0
    assert cldice(a, line(row=20)) == 0.0
    # S_pred 40 px, 20 inside V_gt -> Tprec 0.5; S_gt 20 px all inside V_pred -> Tsens 1
    assert cldice(a, line(cols=(5, 25))) == pytest.approx(2 / 3)
    z = np.zeros_like(a)
    assert cldice(z, z) == 1.0
    assert cldice(a, z) == 0.0 and cldice(z, a) == 0.0


def test_betti0_error():
    pred = blobs_patch()
    gt = np.zeros_like(pred)
    gt[10:200, 10:14] = True
    assert betti0_error(pred, gt) == 3
    assert betti0_error(pred, gt, min_area_px=50) == 2
    assert betti0_error(gt, pred, min_area_px=50) == 2
    d = np.zeros((20, 20), bool)
    d[2:5, 2:5] = True
    d[5:8, 5:8] = True
    assert betti0_error(d, np.zeros_like(d)) == 1
    assert betti0_error(d, np.zeros_like(d), connectivity=4) == 2


def test_tube_dice():
    a = line()
    assert tube_dice(a, a) == 1.0
    z = np.zeros_like(a)
    assert tube_dice(z, z) == 1.0
    assert tube_dice(a, z) == 0.0
    p = np.zeros((11, 11), bool)
    p[5, 5] = True
    # slack 1: "<=" tube is the 5-px plus, "<" GT tube is the single pixel
    assert tube_dice(p, p, slack_px=1) == 1.0
    assert tube_dice(p, p, slack_px=1, gt_strict=True) == 2 * 1 / (5 + 1)


# ------------------------------------------------------------------------------ invariants

masks = arrays(np.bool_, (24, 24), elements=st.booleans())
sparse = st.builds(lambda a, b: a & b, masks, masks)


@settings(max_examples=40, deadline=None)
@given(pred=sparse, gt=sparse, slack=st.sampled_from([0.0, 1.0, 2.5, 5.0]))
def test_relaxed_ratios_in_unit_interval_and_swap_symmetric(pred, gt, slack):
    c = relaxed_counts(pred, gt, slack_px=slack)
    assert c.tp_pred + c.fp == c.n_pred and c.tp_gt + c.fn == c.n_gt
    for variant in ("wiedemann", "authors"):
        r = RelaxedCounts(*counts_tuple(c), variant=variant).ratios()
        for v in r.values():
            assert v is None or 0.0 <= v <= 1.0
    swapped = relaxed_counts(gt, pred, slack_px=slack)
    assert (swapped.tp_pred, swapped.fp, swapped.tp_gt, swapped.fn) == (
        c.tp_gt,
        c.fn,
        c.tp_pred,
        c.fp,
    )


@settings(max_examples=40, deadline=None)
@given(a=sparse, b=sparse)
def test_cldice_symmetric_and_bounded(a, b):
    v = cldice(a, b)
    assert v == cldice(b, a)
    assert 0.0 <= v <= 1.0
    assert betti0_error(a, b) == betti0_error(b, a)
