"""The retraining workflow's pieces that run without training: run recipes, the slim data copy,
and that training imports nothing a GPU machine lacks (no GIS stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflows"))

import retrain  # noqa: E402


@pytest.mark.parametrize("run_set", sorted(retrain.RUN_SETS))
def test_every_run_of_a_set_has_a_valid_recipe(run_set, tmp_path):
    for name in retrain.RUN_SETS[run_set]():
        if name == "semantics":
            continue
        cfg = retrain.run_config(name, tmp_path, 120.0, run_set=run_set, threads=3)
        assert cfg.name == name and cfg.time_budget_s == 120.0 and cfg.threads == 3
        assert cfg.data_root == str(tmp_path)


def test_continuation_runs_continue_trained_models_on_the_shipped_rule(tmp_path):
    runs = retrain.RUN_SETS["continue"]()
    c8 = retrain.run_config("c8-topo3-s21", tmp_path, 60.0, run_set="continue")
    assert c8.init_weights == "shipped" and c8.width == 0.125 and c8.ema_decay == 0.998
    assert c8.fp_budget_px_per_mp == 250 and c8.loss.topo == 3.0 and c8.loss.dice == 10.0
    c25 = retrain.run_config("c25-s21", tmp_path, 60.0, run_set="continue")
    assert c25.width == 0.25 and c25.init_weights == str(tmp_path / "init" / "w025-s1.safetensors")
    assert {r["seed"] for n, r in runs.items() if n.startswith("c8-s")} == {21, 22}


def test_slim_copy_reencodes_training_photos_only_and_carries_fp16_init(tmp_path):
    import torch
    from safetensors.torch import load_file

    from cracksurvey.model import ModelCard, TernausNet, load_model, save_model

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    paths = {
        "deepcrack/train/images/a.jpg": "reencode",
        "masonry_dais2021/train/images/m.jpg": "copy",
        "negatives/spb_facades/images/val_img_4.jpg": "copy"
        if retrain_val("val_img_4")
        else "reencode",
        "negatives/labelmefacade/labels/x.png": "skip",
        "hot_spots.npz": "skip",
        "hot_spots_ft2.npz": "copy",
    }
    for rel in paths:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jpg"):
            photo.save(data / rel, quality=95)
        else:
            (data / rel).write_bytes(b"x" * 100)
    model = TernausNet("unet16", width=0.125, body_head=True)
    card = ModelCard(
        model_id="tiny", architecture="unet16", width=0.125, threshold_px=1.0, body_head=True
    )
    card = save_model(model, card, tmp_path / "w")
    retrain.slim(data, tmp_path / "slim", quality=50, init=[f"w025={tmp_path / 'w.safetensors'}"])
    for rel, what in paths.items():
        out = tmp_path / "slim" / rel
        assert out.exists() == (what != "skip"), rel
        if what == "copy":
            assert out.read_bytes() == (data / rel).read_bytes(), rel
        elif what == "reencode":
            assert out.stat().st_size < (data / rel).stat().st_size, rel
    half = load_file(tmp_path / "slim" / "init" / "w025.safetensors")
    assert all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    loaded, loaded_card = load_model(tmp_path / "slim" / "init" / "w025.safetensors", fold_bn=False)
    assert loaded_card.model_id == "tiny"
    assert (
        json.loads((tmp_path / "slim" / "init" / "w025.json").read_text())["sha256"] != card.sha256
    )


def retrain_val(stem: str) -> bool:
    from cracksurvey.train.negatives import negative_split

    return negative_split(stem, "spb_facades") == "val"


def test_training_imports_no_gis_packages():
    """The GPU machines that train have PyTorch and SciPy but no pyproj, shapely or GDAL."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'pyproj', 'shapely', 'rasterio', 'osgeo', 'dask', 'distributed', 'pyogrio'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.path.insert(0, 'workflows')\n"
        "import retrain, cracksurvey.train.loop, cracksurvey.train.recipe, cracksurvey.tiling, cracksurvey.model\n"
        "import cracksurvey.skeleton, cracksurvey.train.negatives, cracksurvey.evaluation.datasets\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
