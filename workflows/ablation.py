"""The loss and data ablation of the retraining campaign: three seeds per recipe, mean ± sd.

    python workflows/ablation.py --runs runs/campaign --data ../shared/data

The runs are those of ``workflows/retrain.py campaign`` (same architecture, data, crops and
wall-time schedule; only the loss or the training data changes): ``mse``, ``mse+topo``,
``dice+topo``, ``mse+dice+topo`` (= ``ship-s*``, the default recipe), ``faithful`` (mse+topo with
the authors' TOPO constants, D6 undone: docs/method.md) and ``noneg`` (the default recipe
without negatives and synthetic cracks). Each run is scored by ``cracksurvey evaluate`` on the
masonry test split (defaults: the crack layer as process writes it) and by its false crack length
per megapixel on intact façades (the validation photos of spb_facades at 1/4 scale and the
validation sets of labelmefacade: raw centreline pixels, no semantics, so the model alone is
compared).

A difference is claimed only when the seeds' ranges do not overlap (every seed of one recipe
beats every seed of the other). Writes docs/ablation.md and docs/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "mse": "mse",
    "mse+topo": "mse+topo",
    "dice+topo": "dice+topo",
    "mse+dice+topo": "ship",
    "faithful (D6 undone)": "faithful",
    "mse+dice+topo, no negatives": "noneg",
}
METRICS = ("f1", "quality", "abs_delta_cpp", "cldice", "cliou", "width_mae_px", "fp_px_per_mp")


def negatives_fp(weights: Path, data: Path) -> float:
    """Centreline pixels per megapixel of the thresholded map on held-out intact façades."""
    from cracksurvey.evaluation.datasets import read_rgb
    from cracksurvey.model import load_model
    from cracksurvey.skeleton import skeletonize_mask
    from cracksurvey.tiling import predict_tiled
    from cracksurvey.train.negatives import downscale, list_negative_images

    model, card = load_model(weights)
    pixels, found = 0, 0
    for name, factor in (("labelmefacade", 1), ("spb_facades", 4)):
        for path in list_negative_images(data / "negatives" / name, "val"):
            image = downscale(read_rgb(path), factor)
            distance, _ = predict_tiled(image, model, card, core_px=1088, halo_px=96, border="reflect")
            found += int(skeletonize_mask(distance <= card.threshold_px).sum())
            pixels += distance.size
    return found / pixels * 1e6


def score(weights: Path, data: Path) -> dict[str, float | None]:
    from cracksurvey.evaluation.evaluate import evaluate_model

    r = evaluate_model(weights, [data / "masonry_dais2021"], split="test", bootstrap=0)["datasets"][
        "masonry_dais2021"
    ]
    return {
        "f1": r["micro"]["f1"],
        "quality": r["micro"]["quality"],
        "abs_delta_cpp": r["abs_delta_cpp_mean"],
        "cldice": r["cldice_mean"],
        "cliou": r["cliou"],
        "width_mae_px": r["width_mae_px"],
        "fp_px_per_mp": negatives_fp(weights, data),
    }


def weights_of(run: Path) -> Path | None:
    for name in ("model.safetensors", "best.safetensors"):
        if (run / name).exists():
            return run / name
    return None


def summarise(per_seed: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for metric in METRICS:
        values = np.array([v[metric] for v in per_seed.values() if v.get(metric) is not None], float)
        out[metric] = {
            "mean": float(values.mean()) if values.size else None,
            "sd": float(values.std(ddof=1)) if values.size > 1 else None,
            "min": float(values.min()) if values.size else None,
            "max": float(values.max()) if values.size else None,
            "n": int(values.size),
        }
    return out


def separated(a: dict[str, float | None], b: dict[str, float | None]) -> bool:
    """Whether two recipes' seed ranges do not overlap."""
    if None in (a["min"], a["max"], b["min"], b["max"]):
        return False
    return bool(a["max"] < b["min"] or b["max"] < a["min"])  # type: ignore[operator]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs/campaign")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    cache_path = args.out / "ablation.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    runs = cache.get("runs", {})
    for prefix in RECIPES.values():
        for run in sorted(args.runs.glob(f"{prefix}-s*")):
            weights = weights_of(run)
            if weights is None or run.name in runs:
                continue
            print(f"scoring {run.name}", flush=True)
            runs[run.name] = score(weights, args.data)
            cache["runs"] = runs
            cache_path.write_text(json.dumps(cache, indent=1))
    table = {
        recipe: summarise({k: v for k, v in runs.items() if k.startswith(prefix + "-s")})
        for recipe, prefix in RECIPES.items()
    }
    cache["recipes"] = table
    claims = {}
    for metric in ("abs_delta_cpp", "f1", "cliou", "fp_px_per_mp"):
        for a, b in (("mse", "mse+topo"), ("mse+topo", "mse+dice+topo"), ("mse", "mse+dice+topo"),
                     ("faithful (D6 undone)", "mse+topo"), ("mse+dice+topo, no negatives", "mse+dice+topo")):
            claims[f"{metric}: {a} vs {b}"] = separated(table[a][metric], table[b][metric])
    cache["separated"] = claims
    cache_path.write_text(json.dumps(cache, indent=1))
    (args.out / "ablation.md").write_text(render(table, claims))
    print(render(table, claims))
    return 0


def _cell(s: dict[str, float | None], digits: int = 3) -> str:
    if s["mean"] is None:
        return "—"
    sd = "" if s["sd"] is None else f" ± {s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{sd}"


def render(table: dict[str, dict[str, dict[str, float | None]]], claims: dict[str, bool]) -> str:
    lines = [
        "# Loss and data ablation (retraining campaign)",
        "",
        "Regenerate: `python workflows/retrain.py campaign ...` (the runs; see docs/training.md), then",
        "`python workflows/ablation.py --runs runs/campaign --data ../shared/data`.",
        "",
        "Same UNet16 at 1/8 width with a crack-body head, same data (crack datasets + intact façade",
        "negatives + synthetic cracks, except the last row), same 400 s wall-time budget on one H200",
        "shared by 21 runs (mse runs made ~2,700 steps, TOPO runs ~970: TOPO's CPU cost); three seeds",
        "each. Scores: `cracksurvey evaluate` on masonry_dais2021 test (27 images; the crack layer as",
        "process writes it), and raw false centreline pixels per megapixel on held-out intact façades.",
        "Mean ± sd over seeds.",
        "",
        "| recipe | n | F1 | quality | mean abs ΔCPP | clDice | clIoU@4 | width MAE px | false px/MP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, s in table.items():
        lines.append(
            f"| {recipe} | {s['f1']['n']} | {_cell(s['f1'])} | {_cell(s['quality'])} | "
            f"{_cell(s['abs_delta_cpp'], 2)} | {_cell(s['cldice'])} | {_cell(s['cliou'])} | "
            f"{_cell(s['width_mae_px'], 2)} | {_cell(s['fp_px_per_mp'], 0)} |"
        )
    lines += ["", "Seed ranges that do not overlap (a claimable difference):", ""]
    lines += [f"- {k}: {'separated' if v else 'overlapping (no claim)'}" for k, v in claims.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
