"""Choose a trained model's threshold again on validation, with another false-crack penalty.

    python workflows/recalibrate.py --weights runs/X/model.safetensors \\
        --config configs/train/facade-ft-negatives.yaml --data runs/data --fp-budget 250 \\
        --out runs/X-recalibrated

The threshold of a crack model is its operating point: a lower threshold finds fewer false
cracks on intact walls and fewer faint real ones. ``cracksurvey train`` picks it at the end of a
run (the fine sweep of 0.05-12 px on the recipe's validation images and validation negatives,
maximising ``quality - fp_penalty x false px per MP / 1000``, among the thresholds within the
recipe's false-crack budget ``fp_budget_px_per_mp`` when it has one). This reruns that same
calibration for finished weights with another penalty or budget and writes ``OUT/model.safetensors`` + card: the
same weights, the new threshold, the new validation metrics and sweep, and a note that names the
penalty and the threshold before. Nothing is read from the test splits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--weights", type=Path, default=None, help="model .safetensors (default: shipped)")
    ap.add_argument("--config", type=Path, required=True, help="the recipe the model was trained with")
    ap.add_argument("--data", type=Path, required=True, help="data root of the recipe's datasets")
    ap.add_argument("--fp-penalty", type=float, default=None, help="default: the recipe's")
    ap.add_argument(
        "--fp-budget", type=float, default=None,
        help="false crack px per MP of validation negative a threshold may reach (default: the recipe's)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    from cracksurvey.model import load_model, save_model
    from cracksurvey.train import loop
    from cracksurvey.train.recipe import load_config

    overrides: dict = {"data_root": str(args.data)}
    if args.fp_penalty is not None:
        overrides["fp_penalty"] = args.fp_penalty
    if args.fp_budget is not None:
        overrides["fp_budget_px_per_mp"] = args.fp_budget
    cfg = load_config(args.config, overrides)
    if cfg.selection_metric != "quality_fp":
        raise SystemExit(f"{args.config}: selection_metric is {cfg.selection_metric}, not quality_fp")
    model, card = load_model(args.weights, fold_bn=False)
    args.out.mkdir(parents=True, exist_ok=True)
    # calibrate() reads OUT/best.safetensors + card and writes OUT/model.*
    notes = dict(card.notes)
    notes["recalibrated"] = (
        f"threshold chosen again on validation with fp_penalty {cfg.fp_penalty} and a false-crack "
        f"budget of {cfg.fp_budget_px_per_mp:g} px per MP (0: none); it was {card.threshold_px} px"
    )
    save_model(model, dataclasses.replace(card, notes=notes), args.out / "best")
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    device = loop.choose_device()
    val, negatives = loop.validation_data(cfg)
    result = loop.calibrate(
        cfg, args.out, val, device=device, bf16=loop.uses_bf16(cfg, device), negatives=negatives
    )
    # the card keeps the model's own id and recipe: only the threshold and its metrics change
    final = json.loads((args.out / "model.json").read_text())
    final["model_id"] = card.model_id
    final["recipe"] = card.recipe
    (args.out / "model.json").write_text(json.dumps(final, indent=2))
    for suffix in (".safetensors", ".json"):  # the copy calibrate() read
        (args.out / f"best{suffix}").unlink(missing_ok=True)
    print(json.dumps({"threshold_px_before": card.threshold_px, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
