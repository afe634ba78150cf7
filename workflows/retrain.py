"""Retrain the default model and its ablations in one campaign (GPU or CPU), from packed data.

    # 1. pack the training data (re-encoded copies, mined hard negatives, crack-map stamps)
    python workflows/retrain.py pack --data ../shared/data --out runs/data
    # 2. train every run of the campaign at once, each for a fixed wall-time budget
    python workflows/retrain.py campaign --data runs/data --out runs/campaign --budget-s 420
    # (one run alone)
    python workflows/retrain.py run --name ship-s1 --data runs/data --out runs/campaign --budget-s 420
    # 3. unpack a campaign's archives (e.g. brought back from a GPU machine)
    python workflows/retrain.py unpack --archives DIR --out runs/campaign
    # 4. re-fit a collapsed crack-body head; evaluate and ship a run as the default model
    python workflows/retrain.py refit-body --run runs/campaign/ship-s1 --data runs/data --out runs/ship
    python workflows/retrain.py install --run runs/ship --detection-limit runs/ship/detection_limit.json

The campaign is the default recipe (configs/train/facade.yaml) at three seeds, its width and
negative-weight variants, the loss ablation (mse, mse+topo, dice+topo, mse+dice+topo and the
paper-faithful TOPO constants (docs/method.md D6 undone); three seeds each), the same recipe without
negatives, and the façade-semantics model. Each run is one process; the learning-rate schedule of
every run follows its wall-time budget, so all runs end together whatever the machine's speed.

Packing keeps the data under 64 MiB (training and validation splits only; test splits stay out):
JPEG re-encoding of photos (quality 92 for the masonry target domain, 60-78 for the rest), masks as 1-bit PNG. Hard negatives: the current shipped
model's false crack pixels on the training part of the negative sets are stored as hot spots;
crops centre near them half of the time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("retrain")

CRACK_SETS = ("masonry_dais2021", "deepcrack", "cfd", "mcs_marble", "uav75")
SEEDS = (1, 2, 3)
LOSSES = {
    "mse": {"mse": 1.0, "dice": 0.0, "topo": 0.0},
    "mse+topo": {"mse": 1.0, "dice": 0.0, "topo": 1.0},
    "dice+topo": {"mse": 0.0, "dice": 10.0, "topo": 1.0},
    "mse+dice+topo": {"mse": 1.0, "dice": 10.0, "topo": 1.0},
    # the authors' constants: alpha 100 / beta 10 summed over the batch, far edges pinned to the
    # clip value (docs/method.md D6 undone)
    "faithful": {
        "mse": 1.0,
        "dice": 0.0,
        "topo": 1.0,
        "topo_params": {"alpha": 100.0, "beta": 10.0, "faithful": True, "reduction": "sum"},
    },
}


def campaign_runs() -> dict[str, dict[str, Any]]:
    """Run name -> recipe overrides on configs/train/facade.yaml (the 'semantics' run is special)."""
    runs: dict[str, dict[str, Any]] = {}
    for seed in SEEDS:
        runs[f"ship-s{seed}"] = {"seed": seed}
    runs["w025-s1"] = {"seed": 1, "width": 0.25}
    runs["w050-s1"] = {"seed": 1, "width": 0.5}
    runs["neg40-s1"] = {
        "seed": 1,
        "negatives": [
            {"name": "negatives/labelmefacade", "weight": 0.2, "hot_spots": "hot_spots.npz", "hot_share": 0.5},
            {"name": "negatives/spb_facades", "weight": 0.17, "scales": [1, 2, 4], "hot_spots": "hot_spots.npz", "hot_share": 0.5},
            {"name": "brick", "weight": 0.03},
        ],
    }
    for loss, weights in LOSSES.items():
        if loss == "mse+dice+topo":
            continue  # = ship-s*
        for seed in SEEDS:
            runs[f"{loss}-s{seed}"] = {"seed": seed, "loss": weights}
    for seed in SEEDS:
        runs[f"noneg-s{seed}"] = {"seed": seed, "negatives": [], "synthetic": {"weight": 0.0}}
    runs["semantics"] = {}
    return runs


# Continuations of trained models (second GPU campaign): overrides on their own recipe file.
# Selection and calibration on the shipped rule (false-crack budget 250 px per MP on the
# validation negatives); hard negatives mined from the shipped model (hot_spots_ft2.npz).
_CONTINUE_NEG = [
    {"name": "negatives/labelmefacade", "weight": 0.2, "hot_spots": "hot_spots_ft2.npz", "hot_share": 0.5},
    {"name": "negatives/spb_facades", "weight": 0.17, "scales": [1, 2, 4], "hot_spots": "hot_spots_ft2.npz", "hot_share": 0.5},
    {"name": "brick", "weight": 0.03},
]
_CONTINUE_BASE: dict[str, Any] = {
    "config": "facade-ft-negatives.yaml",
    "ema_decay": 0.998,
    "fp_budget_px_per_mp": 250.0,
    "crops_per_epoch": 6400,
    "negatives": _CONTINUE_NEG,
}


def continuation_runs() -> dict[str, dict[str, Any]]:
    """Run name -> recipe (``config`` file in configs/train) and overrides, for ``--set continue``.

    ``c8-*`` continue the shipped 1/8-width model; ``c8-topo3-*`` weigh TOPO three times;
    ``c25-*`` continue the campaign's 1/4-width model (``init/w025-s1.safetensors`` under the
    data folder: ``retrain.py slim`` puts it there).
    """
    runs: dict[str, dict[str, Any]] = {}
    for seed in (21, 22):
        runs[f"c8-s{seed}"] = {**_CONTINUE_BASE, "seed": seed}
    runs["c8-topo3-s21"] = {**_CONTINUE_BASE, "seed": 21, "loss": {"topo": 3.0}}
    for seed in (21, 22):
        runs[f"c25-s{seed}"] = {
            **_CONTINUE_BASE,
            "seed": seed,
            "width": 0.25,
            "lr": 5e-4,
            "init_weights": "@data/init/w025-s1.safetensors",
        }
    return runs


RUN_SETS = {"campaign": campaign_runs, "continue": continuation_runs}


# ------------------------------------------------------------------------------------------ pack


def _reencode(src: Path, dst: Path, quality: int = 92) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").save(dst.parent / (dst.name + ".jpg"), quality=quality)  # names may hold dots


def _mask(src: Path, dst: Path) -> None:
    from PIL import Image

    from cracksurvey.evaluation.datasets import read_mask

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(read_mask(src)).convert("1").save(dst.parent / (dst.name + ".png"), optimize=True)


def pack(data: Path, out: Path, *, mine: bool = True) -> None:
    from cracksurvey.evaluation.datasets import list_pairs

    out.mkdir(parents=True, exist_ok=True)
    for name in CRACK_SETS:
        # validation is on masonry only; the masonry target domain at high quality, the others
        # lower (data budget of a borrowed machine: 64 MiB with the repository)
        for split in ("train", "val") if name == "masonry_dais2021" else ("train",):
            for pair in list_pairs(data / name, split):
                q = 92 if name == "masonry_dais2021" else 76
                _reencode(pair.image, out / name / split / "images" / pair.name, quality=q)
                _mask(pair.mask, out / name / split / "masks" / pair.name)
    lm = data / "negatives" / "labelmefacade"
    for img in sorted((lm / "images").glob("*.jpg")):
        _reencode(img, out / "negatives/labelmefacade/images" / img.stem, quality=75)
        label = lm / "labels" / (img.stem + ".png")
        (out / "negatives/labelmefacade/labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(label, out / "negatives/labelmefacade/labels" / label.name)
    from cracksurvey.train.negatives import negative_split

    for img in sorted((data / "negatives/spb_facades/images").glob("*.jpg")):
        # validation photos are scored at 1/4 scale only: carry them at that scale
        if negative_split(img.stem, "spb_facades") == "val":
            continue
        _reencode(img, out / "negatives/spb_facades/images" / img.stem, quality=78)
    _pack_val_spb(data, out)
    make_stamps(data / "crackmaps_rezaie2020", out / "crack_stamps.npz")
    if mine:
        mine_hot_spots(out, out / "hot_spots.npz")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed {out}: {size / 2**20:.1f} MiB")


def _pack_val_spb(data: Path, out: Path) -> None:
    """Validation spb photos, full resolution but re-encoded harder (scored at 1/4 scale)."""
    from cracksurvey.train.negatives import negative_split

    for img in sorted((data / "negatives/spb_facades/images").glob("*.jpg")):
        if negative_split(img.stem, "spb_facades") == "val":
            _reencode(img, out / "negatives/spb_facades/images" / img.stem, quality=60)


def slim(data: Path, out: Path, *, quality: int = 60, init: list[str] | None = None) -> None:
    """Copy packed data for the crack model's training only: the non-masonry training photos
    re-encoded at ``quality`` (masonry and the validation negatives as they are), no façade labels
    (the semantics model's), the latest hot spots; plus ``init`` weights (``NAME=PATH``) in fp16 as
    ``init/NAME.safetensors`` (card checksum updated). A campaign then fits a borrowed machine's
    64 MiB with the repository."""
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from cracksurvey.model import sha256_file
    from cracksurvey.train.negatives import negative_split

    for src in sorted(p for p in data.rglob("*") if p.is_file()):
        rel = src.relative_to(data)
        if rel.name.startswith("hot_spots") and rel.name != "hot_spots_ft2.npz":
            continue  # older mining rounds
        if rel.parts[:3] == ("negatives", "labelmefacade", "labels"):
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        photo = src.suffix == ".jpg" and rel.parts[0] != "masonry_dais2021" and "images" in rel.parts
        held_out = rel.parts[0] == "negatives" and negative_split(src.stem, rel.parts[1]) == "val"
        if photo and not held_out:
            with Image.open(src) as im:
                im.convert("RGB").save(dst, quality=quality)
        else:
            shutil.copy(src, dst)
    for spec in init or []:
        name, _, path = spec.partition("=")
        w = Path(path)
        dst = out / "init" / f"{name}.safetensors"
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(w).items()}, str(dst))
        card = json.loads(w.with_suffix(".json").read_text())
        card["sha256"] = sha256_file(dst)
        dst.with_suffix(".json").write_text(json.dumps(card, indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"slim copy {out}: {size / 2**20:.1f} MiB")


def make_stamps(maps_dir: Path, out: Path, *, per_map: int = 16, stamp_px: int = 768, seed: int = 0) -> None:
    from PIL import Image

    from cracksurvey.train.negatives import cut_stamps, list_crack_maps, save_stamps

    Image.MAX_IMAGE_PIXELS = None
    rng = np.random.default_rng(seed)
    stamps = []
    for path in list_crack_maps(maps_dir):
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 127
        stamps += cut_stamps(m, stamp_px=stamp_px, n=per_map, rng=rng)
    save_stamps(stamps, out)
    print(f"{len(stamps)} crack-map stamps -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")


def mine_hot_spots(data: Path, out: Path, *, per_image: int = 400, seed: int = 0) -> None:
    """False crack pixels of the shipped model on the training negatives, at each training scale."""
    from cracksurvey.model import load_model
    from cracksurvey.skeleton import skeletonize_mask
    from cracksurvey.tiling import predict_tiled
    from cracksurvey.train.negatives import load_negatives

    model, card = load_model(None)
    rng = np.random.default_rng(seed)
    spots: dict[str, np.ndarray] = {}
    sets = {"negatives/labelmefacade": (1,), "negatives/spb_facades": (1, 2, 4)}
    t0 = time.time()
    for name, scales in sets.items():
        for neg in load_negatives(data / name, "train", scales=scales):
            dist, _ = predict_tiled(neg.image, model, card, core_px=1280, halo_px=96, border="reflect")
            rows, cols = np.nonzero(skeletonize_mask(dist <= card.threshold_px))
            if rows.size > per_image:
                keep = rng.choice(rows.size, per_image, replace=False)
                rows, cols = rows[keep], cols[keep]
            spots[neg.name] = np.stack([rows, cols], 1).astype(np.int32)
    np.savez_compressed(out, **spots)
    n = sum(v.shape[0] for v in spots.values())
    print(f"mined {n} hot spots on {len(spots)} negative images in {time.time() - t0:.0f} s -> {out}")


# ------------------------------------------------------------------------------------------- run


def run_config(name: str, data: Path, budget_s: float, *, run_set: str = "campaign", threads: int = 1) -> Any:
    """The training recipe of one run of a set: its recipe file with the run's overrides."""
    from cracksurvey.train.recipe import load_config

    overrides = dict(RUN_SETS[run_set]()[name])
    recipe = ROOT / "configs/train" / overrides.pop("config", "facade.yaml")
    if str(overrides.get("init_weights", "")).startswith("@data/"):
        overrides["init_weights"] = str(data / overrides["init_weights"][len("@data/") :])
    overrides.update({"data_root": str(data), "time_budget_s": budget_s, "epochs": 1000, "threads": threads, "name": name})
    if "loss" in overrides:
        base = load_config(recipe)

        loss = json.loads(json.dumps(dataclasses.asdict(base.loss)))
        extra = dict(overrides["loss"])
        loss["topo_params"].update(extra.pop("topo_params", {}))
        loss.update(extra)
        overrides["loss"] = loss
    return load_config(recipe, overrides)


def run_one(name: str, data: Path, out: Path, budget_s: float, *, run_set: str = "campaign", threads: int = 1) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s {name} %(message)s")
    import torch

    torch.set_num_threads(threads)
    run_dir = out / name
    if name == "semantics":
        from cracksurvey.train.semantics import SemanticsConfig, train_semantics

        cfg_s = SemanticsConfig(data=str(data / "negatives/labelmefacade"), time_budget_s=budget_s, steps=10**9)
        print(json.dumps(train_semantics(cfg_s, run_dir), default=str))
        return
    from cracksurvey.train.loop import train

    cfg = run_config(name, data, budget_s, run_set=run_set, threads=threads)
    summary = train(cfg, run_dir)
    print(json.dumps(summary, default=str))


def campaign(
    data: Path,
    out: Path,
    budget_s: float,
    only: list[str] | None,
    margin_s: float,
    *,
    run_set: str = "campaign",
    threads: int = 1,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = only or list(RUN_SETS[run_set]())
    t = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, NUMBA_NUM_THREADS=t, PYTHONUNBUFFERED="1")
    procs = {}
    t0 = time.monotonic()
    for name in names:
        log_file = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        procs[name] = (
            subprocess.Popen(
                [
                    *(sys.executable, __file__, "run", "--name", name, "--data", str(data), "--out", str(out)),
                    *("--budget-s", str(budget_s), "--set", run_set, "--threads", t),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            ),
            log_file,
        )
    deadline = t0 + budget_s + margin_s
    while time.monotonic() < deadline and any(p.poll() is None for p, _ in procs.values()):
        time.sleep(5)
    for name, (p, f) in procs.items():
        if p.poll() is None:
            print(f"{name}: still running at the deadline; stopped", flush=True)
            p.kill()
        f.close()
    status = {name: p.returncode for name, (p, _) in procs.items()}
    (out / "campaign.json").write_text(json.dumps({"budget_s": budget_s, "wall_s": time.monotonic() - t0, "returncodes": status}, indent=1))
    print(json.dumps(status), flush=True)


def archive(out: Path, dest: Path, *, chunk_mib: float = 15.0, fp16_prefixes: tuple[str, ...] = ()) -> None:
    """Everything a local evaluation needs, in tar chunks of at most ``chunk_mib`` MiB each."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, str]] = []
    for run in sorted(p for p in out.iterdir() if p.is_dir()):
        for name in ("model.safetensors", "model.json", "best.safetensors", "best.json", "history.json", "config.yaml"):
            f = run / name
            if not f.exists():
                continue
            if name.startswith("best") and (run / "model.safetensors").exists():
                continue  # the calibrated model is the best epoch
            if f.suffix == ".safetensors" and run.name.startswith(fp16_prefixes):
                half = run / (f.stem + ".fp16.safetensors")
                save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()}, str(half))
                f = half
            files.append((f, f"{run.name}/{f.name}"))
    for f in sorted(out.glob("*.log")) + [out / "campaign.json"]:
        if f.exists():
            files.append((f, f.name))
    limit = chunk_mib * 2**20
    k, size, tar = 0, 0.0, None
    for f, arc in files:
        s = f.stat().st_size
        if tar is None or size + s > limit:
            if tar is not None:
                tar.close()
            tar = tarfile.open(dest / f"campaign-{k}.tar.gz", "w:gz")
            k, size = k + 1, 0.0
        tar.add(f, arcname=arc)
        size += s
    if tar is not None:
        tar.close()
    del torch
    print(f"archived {len(files)} files into {k} chunks in {dest}")


def refit_body(run: Path, data: Path, out: Path, *, steps: int = 300, seed: int = 0) -> None:
    """Re-fit the crack-body head (a 1x1 conv) on the frozen network: in some runs it collapsed
    to a constant (its loss stuck near its start), which leaves widths unmeasured. The distance
    head and the features are untouched, so every distance-based metric stays as it was."""
    import torch

    from cracksurvey.model import load_model, save_model
    from cracksurvey.train.data import Augment, MixedCrops
    from cracksurvey.train.losses import body_loss
    from cracksurvey.train.recipe import build_sources, load_config

    torch.manual_seed(seed)
    model, card = load_model(run / "model.safetensors", fold_bn=False)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert model.body is not None
    torch.nn.init.normal_(model.body.weight, std=0.1)
    torch.nn.init.zeros_(model.body.bias)
    for parameter in model.body.parameters():
        parameter.requires_grad_(True)
    cfg = load_config(
        ROOT / "configs/train/facade.yaml",
        {"data_root": str(data), "negatives": [], "synthetic": {"weight": 0.0}, "val_negatives": []},
    )
    sources, weights = build_sources(cfg)
    crops = MixedCrops(sources, weights, crop_px=128, aug=Augment())
    optimizer = torch.optim.Adam(model.body.parameters(), lr=0.05)
    mean = torch.tensor(card.mean)[:, None, None]
    std = torch.tensor(card.std)[:, None, None]
    rng = np.random.default_rng(seed)
    for step in range(steps):
        images, _, body = crops.batch(16, rng)
        x = ((torch.from_numpy(images) - mean) / std).contiguous(memory_format=torch.channels_last)
        loss = body_loss(model(x)[:, 1:2], torch.from_numpy(body))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"body refit step {step}: loss {float(loss.detach()):.3f}", flush=True)
    notes = {**card.notes, "body_head": f"re-fitted on the frozen network for {steps} steps of 16 x 128 px crops (workflows/retrain.py refit-body)"}
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, dataclasses.replace(card, notes=notes), out / "model")
    print(f"body head re-fitted -> {out / 'model.safetensors'}")


def install(run: Path, data: Path, *, detection_limit: Path | None) -> None:
    """Evaluate a finished run on the test splits and ship it as the default model."""
    from cracksurvey.evaluation.evaluate import evaluate_model
    from cracksurvey.model import DEFAULT_MODEL_ID, SHIPPED_DIR, load_model, save_model

    model, card = load_model(run / "model.safetensors", fold_bn=False)
    results = evaluate_model(run / "model.safetensors", [data / "masonry_dais2021", data / "deepcrack"], split="test")
    metrics = dict(card.metrics)
    metrics["test"] = {
        name: {k: r[k] for k in ("n_images", "cpp_n_patches", "cpp_pred_mean", "cpp_gt_mean", "abs_delta_cpp_mean",
                                 "cpp_gt_bridged_mean", "abs_delta_cpp_gt_bridged_mean", "cldice_mean", "cliou", "dilated_f1",
                                 "betti0_error_mean", "width_mae_px",
                                 "width_bias_px", "ci95")}
        | {k: r["micro"][k] for k in ("correctness", "completeness", "quality", "f1")}
        for name, r in results["datasets"].items()
    }
    metrics["test_protocol"] = "cracksurvey evaluate --split test (defaults; docs/method.md, Evaluation)"
    notes = dict(card.notes)
    if detection_limit is not None:
        limit = json.loads(detection_limit.read_text())
        notes["detection_limit_px"] = limit["detection_limit_px"]
        notes["detection_limit"] = {k: limit[k] for k in ("centreline_found", "protocol")}
    notes["reproduce"] = (
        "python workflows/retrain.py pack --data ../shared/data --out runs/data && python workflows/retrain.py "
        "campaign --data runs/data --out runs/campaign --budget-s 400 (GPU) && python workflows/retrain.py "
        "refit-body --run runs/campaign/ship-s1 --data runs/data --out runs/ship && python workflows/retrain.py "
        "install --run runs/ship --data ../shared/data --detection-limit runs/ship/detection_limit.json"
    )
    card = dataclasses.replace(card, model_id=DEFAULT_MODEL_ID, metrics=metrics, notes=notes)
    card = save_model(model, card, SHIPPED_DIR / DEFAULT_MODEL_ID)
    print("installed", SHIPPED_DIR / DEFAULT_MODEL_ID, card.sha256)


def plot_curves(runs: Path, out: Path) -> None:
    """Training curves of a campaign's runs (loss, validation quality, false positives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    groups = {"ship": "C0", "noneg": "C1", "mse+topo": "C2", "dice+topo": "C3", "faithful": "C4", "mse": "C5"}
    for group, colour in groups.items():
        dirs = sorted(p for p in runs.glob(f"{group}-s*") if p.is_dir())
        for i, run in enumerate(dirs):
            history = json.loads((run / "history.json").read_text())["history"]
            steps = np.cumsum([e.get("steps", 200) for e in history])
            style = dict(color=colour, alpha=0.8, label=group if i == 0 else None)
            ax[0].plot(steps, [e["train"].get("total", np.nan) for e in history], **style)
            ax[1].plot(steps, [e["val"]["quality"] for e in history], **style)
            ax[2].plot(steps, [e["val"].get("fp_px_per_mp", np.nan) for e in history], **style)
    ax[0].set_yscale("log")
    ax[0].set_title("training loss (mean per step, all terms)")
    ax[1].set_title("masonry validation quality (best threshold of the coarse sweep)")
    ax[2].set_title("false centreline px per MP, held-out intact façades")
    for a in ax:
        a.set_xlabel("optimizer steps (16 x 256 px crops)")
        a.legend(fontsize=8)
    fig.suptitle(f"Retraining campaign {runs.name}: each run's validation after every 200 steps")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def unpack(archives: Path, out: Path) -> None:
    """Extract campaign chunks; fp16 transport copies are restored to fp32 safetensors (the card's
    checksum is then that of the restored file, recomputed)."""
    from safetensors.torch import load_file, save_file

    from cracksurvey.model import read_card, sha256_file

    out.mkdir(parents=True, exist_ok=True)
    for chunk in sorted(archives.glob("campaign-*.tar.gz")):
        with tarfile.open(chunk) as tar:
            tar.extractall(out, filter="data")
    for half in out.rglob("*.fp16.safetensors"):
        full = half.with_name(half.name.replace(".fp16", ""))
        save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(half).items()}, str(full))
        half.unlink()
        card = read_card(full)
        card = dataclasses.replace(card, sha256=sha256_file(full), notes={**card.notes, "transport": "fp16 (restored to fp32)"})
        full.with_suffix(".json").write_text(card.to_json())
    print(f"unpacked into {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    p.add_argument("--out", type=Path, default=ROOT / "runs/data")
    p.add_argument("--no-mine", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--budget-s", type=float, required=True)
    r.add_argument("--set", default="campaign", choices=sorted(RUN_SETS), help="which runs NAME is among")
    r.add_argument("--threads", type=int, default=1, help="CPU threads of the run (TOPO, data)")
    c = sub.add_parser("campaign")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--budget-s", type=float, default=420)
    c.add_argument("--margin-s", type=float, default=60)
    c.add_argument("--only", default="", help="comma-separated run names")
    c.add_argument("--archive", type=Path, default=None, help="also write tar chunks here")
    c.add_argument("--set", default="campaign", choices=sorted(RUN_SETS), help="campaign: the first retraining; continue: continuations of trained models")
    c.add_argument("--threads", type=int, default=1, help="CPU threads per run (TOPO, data)")
    sl = sub.add_parser("slim", help="a smaller copy of packed data (harder JPEG) plus init weights in fp16, to carry")
    sl.add_argument("--data", type=Path, required=True)
    sl.add_argument("--out", type=Path, required=True)
    sl.add_argument("--quality", type=int, default=60)
    sl.add_argument("--init", nargs="*", default=[], metavar="NAME=PATH", help="weights (.safetensors with card) to carry as init/NAME.safetensors")
    b = sub.add_parser("refit-body")
    b.add_argument("--run", type=Path, required=True)
    b.add_argument("--data", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--steps", type=int, default=300)
    i = sub.add_parser("install")
    i.add_argument("--run", type=Path, required=True)
    i.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    i.add_argument("--detection-limit", type=Path, default=None, help="JSON of workflows/detection_limit.py")
    cv = sub.add_parser("curves")
    cv.add_argument("--runs", type=Path, required=True)
    cv.add_argument("--out", type=Path, default=ROOT / "docs/training-curves.png")
    u = sub.add_parser("unpack")
    u.add_argument("--archives", type=Path, required=True)
    u.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.out, mine=not args.no_mine)
    elif args.cmd == "run":
        run_one(args.name, args.data, args.out, args.budget_s, run_set=args.set, threads=args.threads)
    elif args.cmd == "slim":
        slim(args.data, args.out, quality=args.quality, init=args.init)
    elif args.cmd == "campaign":
        only = [n for n in args.only.split(",") if n] or None
        campaign(args.data, args.out, args.budget_s, only, args.margin_s, run_set=args.set, threads=args.threads)
        if args.archive:
            fp16 = tuple(f"{loss}-" for loss in LOSSES) + ("noneg-", "w050-")
            archive(args.out, args.archive, fp16_prefixes=fp16)
    elif args.cmd == "refit-body":
        refit_body(args.run, args.data, args.out, steps=args.steps)
    elif args.cmd == "install":
        install(args.run, args.data, detection_limit=args.detection_limit)
    elif args.cmd == "curves":
        plot_curves(args.runs, args.out)
    elif args.cmd == "unpack":
        unpack(args.archives, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
