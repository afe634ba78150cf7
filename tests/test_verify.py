"""The crack verifier: points along cracks, patches, scores, the shipped weights and the drop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from cracksurvey.config import ProcessConfig
from cracksurvey.errors import ConfigError, ModelError
from cracksurvey.process.verify_stage import drop_unverified
from cracksurvey.verify import (
    CrackVerifier,
    VerifierCard,
    crack_points,
    load_verifier,
    read_patches,
    save_verifier,
    score_patches,
    verify_cracks,
)


def test_points_are_spread_along_each_crack_and_capped():
    straight = np.array([[10.0, 0.0], [10.0, 80.0]])  # 80 px: 6 points at the stretch centres
    short = np.array([[5.0, 5.0], [5.0, 9.0]])  # 4 px: one point, its middle
    rows, cols, index = crack_points([straight, short], per_crack=6)
    assert index.tolist() == [0] * 6 + [1]
    assert np.all(rows[:6] == 10) and np.allclose(cols[:6], np.round((np.arange(6) + 0.5) / 6 * 80))
    assert (rows[6], cols[6]) == (5, 7)
    empty = crack_points([], per_crack=6)
    assert all(a.size == 0 for a in empty)


def test_patches_are_centred_and_reflected_at_the_border():
    image = np.arange(3 * 20 * 30, dtype=np.int64).reshape(3, 20, 30).astype(np.uint8)
    inside = read_patches(image, np.array([10]), np.array([15]), 8)
    assert inside.shape == (1, 3, 8, 8)
    assert np.array_equal(inside[0], image[:, 6:14, 11:19])
    corner = read_patches(image, np.array([0]), np.array([0]), 8)[0]
    assert np.array_equal(corner[:, 4, 4], image[:, 0, 0])  # the centre is the point itself
    assert np.array_equal(corner[:, 3, 4], image[:, 1, 0])  # reflected without repeating the edge
    assert np.array_equal(corner[:, 4, 3], image[:, 0, 1])


def test_saved_verifier_loads_with_its_card_and_a_changed_file_is_refused(tmp_path):
    torch.manual_seed(0)
    net = CrackVerifier(width=4)
    card = save_verifier(net, VerifierCard(model_id="tiny", width=4, min_score=0.3), tmp_path / "v")
    loaded, loaded_card = load_verifier(tmp_path / "v.safetensors")
    assert loaded_card == card and len(card.sha256) == 64
    x = np.random.default_rng(0).integers(0, 255, (5, 3, 64, 64), dtype=np.uint8)
    assert np.allclose(score_patches(net.eval(), card, x), score_patches(loaded, loaded_card, x))
    raw = json.loads((tmp_path / "v.json").read_text())
    (tmp_path / "v.json").write_text(json.dumps({**raw, "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="checksum"):
        load_verifier(tmp_path / "v.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_verifier(tmp_path / "missing.safetensors")


def test_crack_scores_are_the_mean_of_their_patches():
    net, card = load_verifier()
    card = dataclasses.replace(card, points_per_crack=3)
    image = np.full((3, 100, 100), 160, np.uint8)
    lines = [np.array([[50.0, 10.0], [50.0, 90.0]]), np.zeros((0, 2))]
    scores = verify_cracks(image, lines, net, card)
    rows, cols, _ = crack_points(lines[:1], per_crack=3)
    expected = score_patches(net, card, read_patches(image, rows, cols, card.patch_px)).mean()
    assert scores[0] == pytest.approx(expected) and np.isnan(scores[1])


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "masonry_dais2021").is_dir(), reason="needs ../shared/data")
def test_the_shipped_verifier_ranks_real_cracks_above_false_ones():
    """Crack-layer components of the shipped crack model on held-out data: on the masonry and
    deepcrack validation ground truth (cracks) and on held-out intact façades (all false)."""
    from scipy import ndimage

    from cracksurvey.config import VectorizeConfig
    from cracksurvey.evaluation.datasets import list_pairs, read_mask, read_rgb
    from cracksurvey.evaluation.evaluate import crack_layer_skeleton
    from cracksurvey.model import load_model
    from cracksurvey.tiling import predict_tiled
    from cracksurvey.train.negatives import list_negative_images

    model, card = load_model(None)
    net, vcard = load_verifier()
    assert vcard.crack_model_sha256 == card.sha256

    def component_scores(image, keep):
        distance, _ = predict_tiled(image, model, card, core_px=1280, halo_px=96, border="reflect")
        skeleton, _ = crack_layer_skeleton(
            distance, threshold_px=card.threshold_px, vectorize=VectorizeConfig()
        )
        lab, n = ndimage.label(skeleton, structure=np.ones((3, 3)))
        lines = [np.argwhere(lab == i).astype(float) for i in range(1, n + 1) if keep(lab == i)]
        return list(verify_cracks(image, lines, net, vcard))

    real, false = [], []
    pairs = (
        list_pairs(SHARED / "masonry_dais2021", "val")[:8]
        + list_pairs(SHARED / "deepcrack", "val")[:8]
    )
    for pair in pairs:
        near = ndimage.binary_dilation(read_mask(pair.mask), iterations=3)
        real += component_scores(read_rgb(pair.image), lambda m, near=near: near[m].mean() >= 0.5)
    for path in list_negative_images(SHARED / "negatives" / "labelmefacade", "val")[:8]:
        false += component_scores(read_rgb(path), lambda m: True)
    real_a, false_a = np.array(real), np.array(false)
    assert real_a.size >= 10 and false_a.size >= 5
    auc = (real_a[:, None] > false_a[None, :]).mean()
    assert auc > 0.75, (auc, real_a, false_a)
    # the calibration keeps 95 % of the five crack datasets' validation cracks
    assert (real_a >= vcard.min_score).mean() >= 0.85, real_a


def test_drop_removes_low_scores_with_their_branches_and_renumbers():
    lines = [shapely.LineString([(0, i), (5, i)]) for i in range(3)]
    cracks = gpd.GeoDataFrame(
        {"crack_id": [1, 2, 3], "verifier_score": [0.9, 0.1, np.nan]}, geometry=lines
    )
    branches = gpd.GeoDataFrame(
        {"crack_id": [1, 2, 2, 3], "branch_id": [1, 1, 2, 1]},
        geometry=[lines[0], lines[1], lines[1], lines[2]],
    )
    kept, kept_branches, dropped = drop_unverified(cracks, branches, min_score=0.5)
    assert dropped == 1
    assert kept["crack_id"].tolist() == [1, 2] and kept["verifier_score"].iloc[0] == 0.9
    assert np.isnan(kept["verifier_score"].iloc[1])  # no score: kept
    assert kept_branches["crack_id"].tolist() == [1, 2]
    same = drop_unverified(cracks, branches, min_score=0.0)
    assert same[2] == 0 and same[0] is cracks


def test_verify_config_is_checked():
    assert ProcessConfig().verify.mode == "auto" and ProcessConfig().verify.min_score is None
    assert ProcessConfig.from_dict({"verify": {"min_score": 0.2}}).verify.min_score == 0.2
    with pytest.raises(ConfigError, match="verify.min_score"):
        ProcessConfig.from_dict({"verify": {"min_score": 2}})
    with pytest.raises(ConfigError, match="verify.mode"):
        ProcessConfig.from_dict({"verify": {"mode": "maybe"}})


@pytest.mark.parametrize("n_points", [3, 400])  # few: window by window; many: whole image
def test_image_patches_are_the_same_read_whole_or_by_window(tmp_path, n_points):
    """A tiled GeoTIFF's patches read window by window (few points) are the patches of the
    whole image, reflected at its border, as are those of a JPEG read whole."""
    from conftest import make_geotiff
    from PIL import Image

    from cracksurvey.process import verify_stage

    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, (3, 300, 420), dtype=np.uint8)
    tif = make_geotiff(tmp_path / "wall.tif", image, tiled=True, blockxsize=128, blockysize=128)
    Image.fromarray(np.moveaxis(image, 0, -1)).save(tmp_path / "wall.png")
    edges = [(0, 0), (299, 419), (5, 410), (150, 2)]
    rows, cols = (
        np.array([p[k] for p in edges] + list(rng.integers(0, 300 if k == 0 else 420, n_points)))
        for k in (0, 1)
    )
    expected = read_patches(image, rows, cols, 32)
    few = rows.size * 32**2 * verify_stage.WINDOWED_READ_FACTOR < image[0].size
    assert few == (n_points == 3)
    np.testing.assert_array_equal(verify_stage.image_patches(tif, rows, cols, 32), expected)
    png = verify_stage.image_patches(tmp_path / "wall.png", rows, cols, 32)
    np.testing.assert_array_equal(png, expected)


def test_calibrating_again_keeps_the_weights_and_sets_the_rule_threshold(tmp_path):
    """``train_verifier.py calibrate``: the card's min_score becomes the highest threshold that
    keeps 95 % of each kind's validation cracks; weights and checksum stay."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
    import train_verifier

    torch.manual_seed(0)
    card = save_verifier(
        CrackVerifier(width=4), VerifierCard(model_id="tiny", width=4), tmp_path / "v"
    )
    rng = np.random.default_rng(1)
    n = 120  # 40 components of 3 patches: 20 of each kind, half of them cracks
    val = dict(
        X=rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8),
        y=np.repeat(np.arange(40) % 2, 3),
        g=np.repeat(np.arange(40), 3),
        kind=np.repeat(np.arange(40) // 20, 3),
    )
    np.savez(tmp_path / "val.npz", **val)
    train_verifier.recalibrate(tmp_path / "v.safetensors", tmp_path / "val.npz", keep=0.95)
    net, new = load_verifier(tmp_path / "v.safetensors")  # the checksum still matches
    assert new.sha256 == card.sha256 and new.notes["previous_min_score"] == card.min_score
    comp, label, kind = train_verifier.group_scores(
        score_patches(net, new, val["X"]), val["y"], val["g"], val["kind"]
    )
    limits = [np.sort(comp[(label == 1) & (kind == k)])[0] for k in (0, 1)]  # 10 cracks: keep all
    assert new.min_score == pytest.approx(min(limits), abs=1e-4)
    assert new.metrics["validation_facades"]["cracks"] == 10


def test_the_shipped_verifier_does_not_take_capture_noise_for_cracks():
    """A crack's score must not hinge on the photo's grain: noise of one grey level or a JPEG
    round trip leave the scores where they were. (The verifier shipped until 2026-12-01 had
    learnt noise as a sign of cracks: one grey level raised its scores by 0.4-0.6 on average.)"""
    import io

    from PIL import Image

    from cracksurvey.config import VectorizeConfig
    from cracksurvey.evaluation.evaluate import crack_layer_skeleton
    from cracksurvey.model import load_model
    from cracksurvey.tiling import predict_tiled
    from cracksurvey.verify import read_patches, score_patches

    repo = Path(__file__).resolve().parents[1]
    with Image.open(repo / "examples" / "survey" / "images" / "B02_north_facade.jpg") as im:
        image = np.asarray(im.convert("RGB").crop((0, 0, 640, 448))).transpose(2, 0, 1).copy()
    model, card = load_model(None)
    distance, _ = predict_tiled(image, model, card, core_px=1280, halo_px=96, border="image")
    skeleton, _ = crack_layer_skeleton(
        distance, threshold_px=card.threshold_px, vectorize=VectorizeConfig()
    )
    rows, cols = np.nonzero(skeleton)
    pick = np.random.default_rng(0).choice(rows.size, min(120, rows.size), replace=False)
    net, vcard = load_verifier()
    patches = read_patches(image, rows[pick], cols[pick], vcard.patch_px)
    clean = score_patches(net, vcard, patches)
    noisy = np.clip(
        np.rint(patches + np.random.default_rng(1).normal(0, 1.0, patches.shape)), 0, 255
    )
    jpeg = np.empty_like(patches)
    for i, patch in enumerate(patches):
        buffer = io.BytesIO()
        Image.fromarray(patch.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=85)
        jpeg[i] = np.asarray(Image.open(buffer)).transpose(2, 0, 1)
    for changed in (noisy.astype(np.uint8), jpeg):
        assert np.abs(score_patches(net, vcard, changed) - clean).mean() < 0.1


def test_capture_augment_recaptures_every_patch_alike_and_reproducibly():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
    import train_verifier

    x = np.random.default_rng(0).integers(0, 256, (8, 3, 64, 64), dtype=np.uint8)
    kw = {"p_blur": 1.0, "p_noise": 1.0, "p_jpeg": 1.0}
    out = train_verifier.capture_augment(x, np.random.default_rng(1), **kw)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(out, x, strict=True))
    assert np.array_equal(out, train_verifier.capture_augment(x, np.random.default_rng(1), **kw))
    none = {"p_blur": 0.0, "p_noise": 0.0, "p_jpeg": 0.0}
    assert np.array_equal(train_verifier.capture_augment(x, np.random.default_rng(1), **none), x)
