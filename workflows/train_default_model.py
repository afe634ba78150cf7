"""Reproduce the shipped default model from scratch (one command, given the data path).

    python workflows/train_default_model.py --data ../shared/data --run runs/default [--resume]

Trains configs/train/mse+dice+topo.yaml (resumable: rerun with --resume after an interruption),
calibrates the threshold on validation, evaluates on the test splits, and copies the weights and
card into cracksurvey/weights/ under the default model id (with --install).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from cracksurvey.model import DEFAULT_MODEL_ID, SHIPPED_DIR, load_model, save_model
from cracksurvey.train.loop import load_config, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/train/mse+dice+topo.yaml"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--run", default=str(ROOT / "runs/default"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--install", action="store_true", help="copy the result into cracksurvey/weights/")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    cfg = load_config(args.config, {"data_root": args.data})
    run = Path(args.run)
    if not (run / "model.safetensors").exists():
        summary = train(
            cfg,
            run,
            resume=args.resume or (run / "checkpoint.pt").exists(),
            progress=lambda n, desc: tqdm(total=n, desc=desc, file=sys.stderr, mininterval=5),
        )
        print(summary)
    if args.install and (run / "model.safetensors").exists():
        install(run, Path(args.data))
    return 0


def install(run: Path, data: Path) -> None:
    """Evaluate the finished run on the test splits and ship it with a complete model card."""
    import dataclasses

    from cracksurvey.evaluation.evaluate import evaluate_model

    model, card = load_model(run / "model.safetensors", fold_bn=False)
    results = evaluate_model(run / "model.safetensors", [data / "masonry_dais2021", data / "deepcrack"], split="test")
    metrics = dict(card.metrics)
    metrics["test"] = {
        name: {k: r[k] for k in ("n_images", "cpp_n_patches", "cpp_pred_mean", "cpp_gt_mean", "abs_delta_cpp_mean",
                                 "cldice_mean", "betti0_error_mean", "width_mae_px", "width_bias_px")}
        | {k: r["micro"][k] for k in ("correctness", "completeness", "quality", "f1")}
        for name, r in results["datasets"].items()
    }
    metrics["test_protocol"] = (
        "cracksurvey evaluate --split test: relaxed metrics at slack 5 px (Wiedemann completeness), micro over "
        "images, at the calibrated threshold; CPP patch 256 px, min area 50 px; width MAE = |predicted - GT| width "
        "at matched skeleton pixels, both measured by cracksurvey.skeleton.measure_width_px"
    )
    history = (run / "history.json").read_text()
    notes = dict(card.notes) | {
        "epochs": card.recipe.get("epochs"),
        "selected_epoch": card.notes.get("epoch"),
        "initialisation": "from scratch (He init, BatchNorm); no ImageNet weights can be downloaded here",
        "architecture_choice": ARCHITECTURE_CHOICE,
        "history_sha256": __import__("hashlib").sha256(history.encode()).hexdigest(),
        "reproduce": "python workflows/train_default_model.py --data ../shared/data --run runs/default --install",
    }
    card = dataclasses.replace(card, model_id=DEFAULT_MODEL_ID, metrics=metrics, notes=notes)
    card = save_model(model, card, SHIPPED_DIR / DEFAULT_MODEL_ID)
    print("installed", SHIPPED_DIR / DEFAULT_MODEL_ID, card.sha256)


ARCHITECTURE_CHOICE = (
    "UNet16 (the paper's TernausNet) at 1/8 channel width with a crack-body head, 0.46 M parameters, "
    "41 GFLOP per megapixel (full width: 29.3 M, 2,612 GFLOP/MP; 1/4 width: 1.8 M, 164 GFLOP/MP). "
    "Measured on this 2-core AMD EPYC without AVX-512/bf16 (README, Benchmarks): 1/8 width runs the "
    "engine at 1.07 MP/s end to end; 1/4 width costs 4x the compute (about 0.3 MP/s here) and, trained "
    "with the same recipe and budget (docs/ablation.md), reached lower test F1 (masonry 0.758 vs 0.803, "
    "deepcrack 0.744 vs 0.818) and 65 % more false-positive length on intact facades, though better "
    "continuity on masonry (mean abs dCPP 0.67 vs 1.37); full width needs a GPU. Train the wider "
    "variants with the same recipe (width: 0.25 / 1.0) where compute allows."
)


if __name__ == "__main__":
    raise SystemExit(main())
