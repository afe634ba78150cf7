"""Training submodule: data, loss gradients, a tiny end-to-end run, exact resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cracksurvey.errors import ConfigError, DatasetError
from cracksurvey.train.data import (
    NO_AUGMENT,
    Augment,
    MixedCrops,
    Sample,
    augment,
    load_samples,
    random_crop,
)
from cracksurvey.train.loop import CALIBRATION_SWEEP, train
from cracksurvey.train.losses import LossWeights, body_loss, combined_loss, mse_loss, soft_dice_loss
from cracksurvey.train.recipe import config_from_dict, load_config
from cracksurvey.train.targets import distance_target, skeletonize_mask

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def write_dataset(root: Path, n: int = 2, size: int = 96, seed: int = 0) -> Path:
    """A tiny dataset folder: grey texture with a dark drawn crack, and its mask."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(120, 160, (size, size, 3)).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            r = int(rng.integers(20, size - 20))
            for c in range(size):
                rr = r + int(8 * np.sin(c / 15))
                mask[rr - 1 : rr + 2, c] = 255
            img[mask > 0] = 40
            Image.fromarray(img).save(root / split / "images" / f"im{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"im{i}.png")
    return root


def tiny_config(root: Path, **kw) -> dict:
    d = {
        "name": "tiny",
        "width": 1 / 16,
        "body_head": True,
        "data_root": str(root.parent),
        "train": [{"name": root.name}],
        "val": [{"name": root.name, "split": "val"}],
        "crop_px": 64,
        "crops_per_epoch": 4,
        "batch_size": 2,
        "epochs": 3,
        "threads": 1,
        "precision": "fp32",
        "loss": {"mse": 1.0, "dice": 1.0, "topo": 1.0, "body": 1.0},
    }
    d.update(kw)
    return d


# ------------------------------------------------------------------------------ data


def test_empty_mask_gives_all_clip_and_skeleton_is_2d():
    assert (distance_target(skeletonize_mask(np.zeros((1, 8, 9), bool))) == 20).all()
    sk = skeletonize_mask(np.pad(np.ones((1, 5, 30), bool), ((0, 0), (3, 3), (0, 0))))
    assert sk.ndim == 2 and sk.sum() >= 26


def test_samples_build_targets_from_skeleton(tmp_path):
    root = write_dataset(tmp_path / "ds")
    samples = load_samples(root, "train")
    assert len(samples) == 2
    s = samples[0]
    assert s.distance.dtype == np.float32 and s.distance.min() == 0 and s.distance.max() == 20
    # the target is the distance to the skeleton, not to the body: body pixels off the centreline > 0
    assert (s.distance[s.body] > 0).any()


def test_mismatched_mask_is_a_clear_error(tmp_path):
    root = write_dataset(tmp_path / "ds", n=1)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "train" / "masks" / "im0.png")
    with pytest.raises(DatasetError, match="im0.png"):
        load_samples(root, "train")


def test_crop_and_augment_keep_image_and_targets_aligned():
    rng = np.random.default_rng(0)
    img = np.zeros((3, 50, 70), np.uint8)
    body = np.zeros((50, 70), bool)
    body[10:13, 5:60] = True
    img[:, body] = 255
    s = Sample("x", "d", img, distance_target(skeletonize_mask(body)), body)
    for _ in range(20):
        im, dist, b = augment(
            *random_crop(s, 64, rng),
            Augment(rot90=0.5, brightness=0, contrast=0, gamma=0, greyscale=0),
            rng,
        )
        assert im.shape == (3, 64, 64) and dist.shape == (64, 64)
        bright = im[0] > 0.5
        np.testing.assert_array_equal(bright, b)  # image and body move together
        assert (
            dist[bright] <= 2.5
        ).all()  # centreline distance small inside the thin crack (tips: √5)


def test_mixed_crops_respect_weights():
    a = [
        Sample(
            "a",
            "A",
            np.zeros((3, 32, 32), np.uint8),
            np.full((32, 32), 20, np.float32),
            np.zeros((32, 32), bool),
        )
    ]
    b = [
        Sample(
            "b",
            "B",
            np.full((3, 32, 32), 255, np.uint8),
            np.full((32, 32), 20, np.float32),
            np.zeros((32, 32), bool),
        )
    ]
    crops = MixedCrops([a, b], [0.9, 0.1], crop_px=32, aug=NO_AUGMENT)
    images, _, _ = crops.batch(400, np.random.default_rng(1))
    share_b = (images.mean(axis=(1, 2, 3)) > 0.5).mean()
    assert 0.05 < share_b < 0.16


# ------------------------------------------------------------------------------ losses


def crack_target(col=16, size=32):
    sk = np.zeros((size, size), bool)
    sk[:, col] = True
    return torch.from_numpy(distance_target(sk))[None, None]


@pytest.mark.parametrize("term", ["mse", "dice", "body"])
def test_each_loss_term_has_a_finite_nonzero_gradient(term):
    y = crack_target(16)
    misaligned = crack_target(22).clone().requires_grad_()  # prediction: crack 6 px off
    if term == "mse":
        loss = mse_loss(misaligned, y)
    elif term == "dice":
        loss = soft_dice_loss(misaligned, y)
    else:
        logit = torch.zeros_like(y).requires_grad_()
        loss = body_loss(logit, (y <= 1).float())
        misaligned = logit
    loss.backward()
    assert torch.isfinite(misaligned.grad).all() and misaligned.grad.abs().sum() > 0


def test_soft_dice_prefers_the_aligned_crack():
    y = crack_target(16)
    assert soft_dice_loss(y, y) < 0.35 < soft_dice_loss(crack_target(24), y)


def test_combined_loss_logs_every_active_term():
    y = crack_target(16)
    out = torch.cat([crack_target(18), torch.zeros_like(y)], 1).requires_grad_()
    total, terms = combined_loss(
        out, y, (y <= 1).float(), LossWeights(mse=1, dice=1, topo=1, body=1)
    )
    assert set(terms) == {"mse", "dice", "topo", "body"}
    total.backward()
    assert out.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ config


def test_unknown_recipe_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="lrr"):
        config_from_dict({"lrr": 1})
    with pytest.raises(ConfigError, match="loss"):
        config_from_dict({"loss": {"msee": 1}})


@pytest.mark.parametrize(
    "recipe",
    [
        "mse",
        "mse+topo",
        "mse+dice+topo",
        "mse+dice+topo-w025",
        "dice+topo",
        "topo",
        "paper-faithful",
        "facade-long-cpu",
    ],
)
def test_shipped_recipes_load(recipe):
    cfg = load_config(REPO / "configs" / "train" / f"{recipe}.yaml")
    assert cfg.name.endswith(recipe.replace("paper-faithful", "mse+topo"))


def test_fine_tune_recipe_starts_from_the_shipped_model():
    """configs/train/facade-ft-negatives.yaml continues the shipped model: its architecture
    takes the shipped weights as they are, and it weighs intact façades more than the default
    recipe does, within a wall-time budget."""
    from cracksurvey.model import TernausNet
    from cracksurvey.train.loop import init_from_weights

    cfg = load_config(REPO / "configs" / "train" / "facade-ft-negatives.yaml")
    base = load_config(REPO / "configs" / "train" / "facade.yaml")
    assert cfg.init_weights == "shipped" and cfg.time_budget_s > 0 and cfg.lr < base.lr
    assert sum(n.weight for n in cfg.negatives) > sum(n.weight for n in base.negatives)
    model = TernausNet(cfg.architecture, width=cfg.width, body_head=cfg.body_head, norm=cfg.norm)
    init_from_weights(model, cfg.init_weights)


# ------------------------------------------------------------------------------ loop


def test_tiny_training_run_writes_model_card_and_history(tmp_path):
    root = write_dataset(tmp_path / "ds")
    cfg = config_from_dict(tiny_config(root))
    summary = train(cfg, tmp_path / "run")
    assert summary["finished"] and summary["epochs_done"] == 3
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (
        card["architecture"] == "unet16"
        and card["sha256"]
        and 0 < card["threshold_px"] <= max(CALIBRATION_SWEEP)
    )
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    assert {"mse", "dice", "topo", "body", "total"} <= set(hist[0]["train"])
    assert (tmp_path / "run" / "history.png").stat().st_size > 0


def warm_up(root: Path, tmp_path: Path) -> None:
    """One throwaway epoch before runs that are compared bit for bit.

    The first training in a process whose torch thread pool started with more threads than the
    run uses rounds differently (a 3e-6 relative change of the first step's loss, measured): two
    runs compared in one process must both come after it. A resume in a new process (the CLI)
    meets the same state as the run it continues.
    """
    train(config_from_dict(tiny_config(root, epochs=1)), tmp_path / "warm-up")


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    root = write_dataset(tmp_path / "ds")
    cfg = config_from_dict(tiny_config(root))
    warm_up(root, tmp_path)
    full = train(cfg, tmp_path / "a")
    part = train(cfg, tmp_path / "b", stop_after_epochs=1)
    assert not part["finished"]
    resumed = train(cfg, tmp_path / "b", resume=True)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "history.json").read_text())["history"]
    assert [h["train"] for h in ha] == [h["train"] for h in hb]
    assert resumed["best"] == full["best"]


def test_ema_saves_the_averaged_weights_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    root = write_dataset(tmp_path / "ds")
    cfg = config_from_dict(tiny_config(root, ema_decay=0.5, crops_per_epoch=8))
    warm_up(root, tmp_path)
    full = train(cfg, tmp_path / "a")
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    raw, avg = state["model"], state["ema"]
    assert int(avg["n_averaged"]) == 3 * 4  # one update per step
    name = "final.weight"
    # the average lags the raw weights: after 12 steps they differ
    assert not torch.equal(raw[name], avg[f"module.{name}"])
    part = train(cfg, tmp_path / "b", stop_after_epochs=1)
    assert not part["finished"]
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert resumed["best"] == full["best"]
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert torch.equal(state_b["ema"][f"module.{name}"], avg[f"module.{name}"])
    # the saved model is the averaged one (one epoch: that epoch is the best)
    one = train(config_from_dict(tiny_config(root, ema_decay=0.5, epochs=1)), tmp_path / "e")
    assert one["best"]["epoch"] == 1
    saved = load_file(tmp_path / "e" / "best.safetensors")
    avg1 = torch.load(tmp_path / "e" / "checkpoint.pt", weights_only=True)["ema"]
    raw1 = torch.load(tmp_path / "e" / "checkpoint.pt", weights_only=True)["model"]
    key = next(k for k in saved if k.endswith(name))
    assert torch.equal(saved[key].float(), avg1[f"module.{name}"].float())
    assert not torch.equal(saved[key].float(), raw1[name].float())
    # a checkpoint written without averaging cannot be resumed with it
    plain = config_from_dict(tiny_config(root))
    train(plain, tmp_path / "c", stop_after_epochs=1)
    with pytest.raises(ConfigError, match="ema_decay"):
        train(cfg, tmp_path / "c", resume=True)
    with pytest.raises(ConfigError, match="ema_decay"):
        train(config_from_dict(tiny_config(root, ema_decay=1.0)), tmp_path / "d")


@pytest.mark.skipif(
    not (SHARED / "masonry_dais2021").is_dir(), reason="needs ../shared/data (the curated datasets)"
)
def test_overfitting_one_real_image_lowers_the_loss(tmp_path):
    src = SHARED / "masonry_dais2021" / "train"
    name = sorted((src / "images").iterdir())[0].name
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (tmp_path / "one" / split / kind).mkdir(parents=True)
            target = tmp_path / "one" / split / kind / name
            target.write_bytes((src / kind / name).read_bytes())
    cfg = config_from_dict(
        tiny_config(
            tmp_path / "one",
            width=0.125,
            epochs=8,
            crops_per_epoch=20,
            batch_size=4,
            crop_px=96,
            augment={
                "hflip": 0,
                "vflip": 0,
                "rot90": 0,
                "brightness": 0,
                "contrast": 0,
                "gamma": 0,
                "greyscale": 0,
            },
            loss={"mse": 1.0, "dice": 0.0, "topo": 0.0, "body": 0.0},
            lr=3e-3,
            lr_schedule="constant",
        )
    )
    train(cfg, tmp_path / "run")
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    losses = [h["train"]["mse"] for h in hist]
    assert losses[-1] < 0.85 * losses[0] and losses[-1] < min(losses[:3]), losses


def test_evaluate_reports_every_metric(tmp_path):
    from cracksurvey.evaluation.evaluate import evaluate_model, format_table

    root = write_dataset(tmp_path / "ds")
    train(config_from_dict(tiny_config(root, epochs=1)), tmp_path / "run")
    res = evaluate_model(
        tmp_path / "run" / "model.safetensors",
        [root],
        split="val",
        precision="fp32",
        cpp_patch_px=128,
    )
    r = res["datasets"]["ds"]
    assert r["n_images"] == 2
    assert r["cpp_n_patches"] == 2  # one 96-px patch per image (patch 128 below)
    assert r["cpp_gt_mean"] == 1.0  # one drawn crack per image
    assert r["cpp_gt_bridged_mean"] == 1.0
    for key in (
        "cpp_pred_mean",
        "abs_delta_cpp_mean",
        "abs_delta_cpp_gt_bridged_mean",
        "cldice_mean",
        "betti0_error_mean",
    ):
        assert np.isfinite(r[key])
    assert "quality" in r["micro"]
    assert "ds" in format_table(res)


def test_bridged_gt_joins_the_pieces_of_one_crack_and_only_them():
    from cracksurvey.evaluation.evaluate import bridged_gt_centreline
    from cracksurvey.evaluation.metrics import cracks_per_patch

    def cpp(m):
        return int(
            cracks_per_patch(m, patch_px=128, min_area_px=0, min_skeleton_length_px=10.0).sum()
        )

    gt = np.zeros((120, 120), bool)
    gt[30, 10:50] = gt[30, 58:110] = True  # one crack drawn in two pieces: an 8-px gap
    gt[90, 10:110] = True  # a second crack 60 px away
    assert cpp(gt) == 3
    bridged = bridged_gt_centreline(gt, max_gap_px=16)
    assert cpp(bridged) == 2
    assert bridged[30, 50:58].all() and not bridged[31:90].any()
    assert cpp(bridged_gt_centreline(gt, max_gap_px=6)) == 3  # the gap is longer than the rule


def test_false_crack_budget_picks_the_best_threshold_within_it():
    from cracksurvey.train.loop import threshold_score

    sweep = {  # threshold px -> validation metrics (a lower threshold: less false crack)
        1.0: {"quality": 0.30, "fp_px_per_mp": 120.0},
        2.0: {"quality": 0.36, "fp_px_per_mp": 240.0},
        3.0: {"quality": 0.40, "fp_px_per_mp": 400.0},
        4.0: {"quality": 0.45, "fp_px_per_mp": 600.0},
    }

    def pick(**kw):
        cfg = config_from_dict({"selection_metric": "quality_fp", **kw})
        return max(sweep, key=lambda t: threshold_score(sweep[t], cfg))

    assert pick(fp_penalty=0.1) == 4.0  # 0.45 - 0.06 beats 0.40 - 0.04
    assert pick(fp_penalty=0.1, fp_budget_px_per_mp=250) == 2.0
    assert pick(fp_penalty=0.1, fp_budget_px_per_mp=400) == 3.0  # the budget is inclusive
    assert pick(fp_penalty=0.1, fp_budget_px_per_mp=50) == 1.0  # none within: the least false crack
    cfg = config_from_dict({"selection_metric": "f1", "fp_budget_px_per_mp": 250})
    assert (
        threshold_score({"f1": 0.7, "fp_px_per_mp": 300.0}, cfg)
        < -1
        < threshold_score({"f1": 0.1, "fp_px_per_mp": 10.0}, cfg)
    )


def test_recalibrate_workflow_keeps_the_weights_and_notes_the_rule(tmp_path):
    import sys

    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO / "workflows"))
    import recalibrate

    root = write_dataset(tmp_path / "ds")
    train(
        config_from_dict(tiny_config(root, epochs=1, selection_metric="quality_fp")),
        tmp_path / "run",
    )
    before = json.loads((tmp_path / "run" / "model.json").read_text())
    args = [
        "--weights",
        str(tmp_path / "run" / "model.safetensors"),
        "--config",
        str(tmp_path / "run" / "config.yaml"),
        "--data",
        str(tmp_path),
        "--fp-budget",
        "100",
        "--out",
        str(tmp_path / "re"),
    ]
    assert recalibrate.main(args) == 0
    after = json.loads((tmp_path / "re" / "model.json").read_text())
    assert after["model_id"] == before["model_id"] and after["recipe"] == before["recipe"]
    assert "budget of 100 px per MP" in after["notes"]["recalibrated"]
    assert after["threshold_px"] in CALIBRATION_SWEEP
    a, b = (
        load_file(tmp_path / "run" / "model.safetensors"),
        load_file(tmp_path / "re" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "re" / "best.safetensors").exists()
    # a recipe that does not select on quality_fp is refused
    train(config_from_dict(tiny_config(root, epochs=1)), tmp_path / "plain")
    with pytest.raises(SystemExit, match="quality_fp"):
        recalibrate.main(
            [*args[:2], "--config", str(tmp_path / "plain" / "config.yaml"), *args[4:]]
        )


@pytest.mark.parametrize("kind", ["lattice", "grid", "parallel"])
def test_line_patterns_are_straight_regular_and_darken_only_their_lines(kind):
    from scipy import ndimage

    from cracksurvey.train.negatives import SyntheticStyle, render_line_pattern

    rng = np.random.default_rng(3)
    background = np.full((3, 192, 192), 200, np.uint8)
    style = SyntheticStyle(noise=(0.0, 0.0))
    image, lines = render_line_pattern(background, rng, kind=kind, style=style)
    assert image.shape == background.shape and image.dtype == np.uint8
    assert lines.any() and lines.dtype == bool
    dark = image[0] < 190
    # every darkened pixel lies on a line (its blurred width; a line just outside the crop may
    # shade its first pixels), and far from them the wall is kept
    near = ndimage.binary_dilation(lines, iterations=5)
    inner = (slice(3, -3), slice(3, -3))
    assert not (dark & ~near)[inner].any()
    assert (image[0][inner][~near[inner]] >= 199).all()
    if kind == "parallel":  # each line straight: its centreline pixels along one direction
        lab, n = ndimage.label(lines, structure=np.ones((3, 3)))
        assert 1 <= n <= 8
        for i in range(1, n + 1):
            r, c = np.nonzero(lab == i)
            if r.size >= 20:
                ev = np.linalg.eigvalsh(np.cov(np.stack([r, c]).astype(float)))
                assert ev[0] / ev[1] < 0.01
    with pytest.raises(ValueError, match="expected one of"):
        render_line_pattern(background, rng, kind="spiral")
