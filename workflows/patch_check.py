"""Crack or no crack, patch by patch: precision and recall of `cracksurvey process` on wall patches.

    python workflows/patch_check.py --data ../shared/data [--weights W.safetensors] [--json]

A user who asks "is this wall cracked?" gets a yes when the crack layer of its photo is not empty.
This runs the real pipeline (``process_survey``, default settings, pixel units: no GSD) on one
survey of 224 x 224 patches and scores that yes/no per patch:

- **cracked** (positives): the masonry_dais2021 test patches (real cracked brick, block and
  rendered masonry; every patch has a crack), and separately its validation patches (which
  chose the shipped model's epoch and threshold, so not an independent check);
- **intact** (negatives), by source:
  - ``sceaux``: random crops of the four Sceaux castle photos (an intact brick and limestone
    façade, native resolution; some crops catch sky, trees or windows);
  - ``brick``: five crops of ``skimage.data.brick()`` (an intact brick wall; the model saw
    this photo as a negative in training, so a check of memory, not of generalisation);
  - ``facade-walls``: crops of the held-out validation photos of labelmefacade that are all
    wall (building class), the ones training did not see;
  - ``spb-val``: crops of the three held-out St Petersburg façades, at full and half size.

Per source: patches, patches with at least one crack, and the crack length found. Then
precision and recall of "at least one crack" for the test positives against all intact
patches, against the held-out wall-only sources (facade-walls, spb-val) and against Sceaux
alone; and the same with a patch called cracked only from ``--min-length-px`` of crack on.
Precision depends on how many of the patches are cracked (here 27 against 82-187 intact), so
each row also gives it for a balanced set, ``recall / (recall + false positive rate)``, the
figure to compare with a check that has as many cracked patches as intact ones; and the recall
and balanced precision with the validation patches as the cracked ones (fainter cracks). A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "workflows"))

from bench_cache import cpu_model  # noqa: E402
from false_positives import SPB_VAL  # noqa: E402

PATCH = 224
WALL_ONLY = ("facade-walls", "spb-val")


def _crops(img: np.ndarray, n: int, rng: np.random.Generator, mask: np.ndarray | None = None):
    """Up to ``n`` random PATCH x PATCH crops of an (H, W, 3) image (all inside ``mask`` if
    given), tried at most 40 n times."""
    h, w = img.shape[:2]
    out = []
    for _ in range(40 * n):
        if len(out) == n or h < PATCH or w < PATCH:
            break
        r, c = int(rng.integers(0, h - PATCH + 1)), int(rng.integers(0, w - PATCH + 1))
        if mask is not None and not mask[r : r + PATCH, c : c + PATCH].all():
            continue
        out.append(img[r : r + PATCH, c : c + PATCH])
    return out


def build_patches(data: Path, folder: Path, seed: int) -> dict[str, str]:
    """Write the patches as PNGs into ``folder``; returns file name -> source."""
    from PIL import Image
    from skimage import data as skdata

    from cracksurvey.train.negatives import negative_split

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    source: dict[str, str] = {}

    def save(name: str, array: np.ndarray, src: str) -> None:
        Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8)).save(
            folder / f"{name}.png"
        )
        source[f"{name}.png"] = src

    for split in ("test", "val"):
        for path in sorted((data / "masonry_dais2021" / split / "images").glob("*.png")):
            save(f"cracked-{split}-{path.stem}", np.asarray(Image.open(path).convert("RGB")),
                 f"cracked-{split}")
    for path in sorted((data / "facades").glob("*.jpg")):
        img = np.asarray(Image.open(path).convert("RGB"))
        for i, crop in enumerate(_crops(img, 25, rng)):
            save(f"sceaux-{path.stem}-{i}", crop, "sceaux")
    brick = skdata.brick()
    for i, (r, c) in enumerate([(0, 0), (0, 288), (288, 0), (288, 288), (144, 144)]):
        save(f"brick-{i}", np.stack([brick[r : r + PATCH, c : c + PATCH]] * 3, -1), "brick")
    lmf = data / "negatives" / "labelmefacade"
    for path in sorted((lmf / "images").glob("*.jpg")):
        if negative_split(path.stem, "labelmefacade") != "val":
            continue
        label = np.asarray(Image.open(lmf / "labels" / (path.stem + ".png")).convert("RGB"))
        wall = (label[..., 0] == 128) & (label[..., 1] == 0) & (label[..., 2] == 0)
        img = np.asarray(Image.open(path).convert("RGB"))
        for i, crop in enumerate(_crops(img, 2, rng, wall)):
            save(f"facade-walls-{path.stem}-{i}", crop, "facade-walls")
    for stem in SPB_VAL:
        path = data / "negatives" / "spb_facades" / "images" / f"{stem}.jpg"
        full = Image.open(path).convert("RGB")
        for scale in (1, 2):
            img = np.asarray(full.reduce(scale) if scale > 1 else full)
            for i, crop in enumerate(_crops(img, 10, rng)):
                save(f"spb-val-{stem}-s{scale}-{i}", crop, "spb-val")
    return source


def score(found: dict[str, float], source: dict[str, str], min_length_px: float) -> dict:
    """Per source counts; precision and recall of 'cracked' for the test positives."""
    per: dict[str, dict[str, Any]] = {}
    for name, src in source.items():
        length = found.get(name, 0.0)
        row = per.setdefault(src, {"patches": 0, "with_crack": 0, "over_min": 0, "length_px": []})
        row["patches"] += 1
        row["with_crack"] += int(length > 0)
        row["over_min"] += int(length >= min_length_px)
        row["length_px"].append(length)
    for row in per.values():
        lengths = np.asarray(row.pop("length_px"))
        row["mean_length_px"] = float(lengths.mean())
    out: dict[str, Any] = {"sources": per}
    lengths = {src: np.array([found.get(n, 0.0) for n, s in source.items() if s == src])
               for src in per}
    walls = np.concatenate([lengths[s] for s in WALL_ONLY if s in lengths] or [np.zeros(0)])
    out["sweep"] = [
        {
            "min_length_px": t,
            "recall": float(np.mean(lengths["cracked-test"] >= t)) if t else
            float(np.mean(lengths["cracked-test"] > 0)),
            "held_out_walls_called_cracked": float(np.mean(walls >= t)) if t else
            float(np.mean(walls > 0)),
        }
        for t in (0, 20, 50, 100, 150, 200)
    ] if "cracked-test" in lengths else []
    none = {"patches": 0, "with_crack": 0, "over_min": 0}
    positives = per.get("cracked-test", none)
    validation = per.get("cracked-val", none)
    for label, negs in (("all intact", [s for s in per if not s.startswith("cracked")]),
                        ("held-out walls", [s for s in WALL_ONLY if s in per]),
                        ("sceaux", ["sceaux"] if "sceaux" in per else [])):
        for rule, key in (("any crack", "with_crack"), (f">= {min_length_px:g} px", "over_min")):
            tp = positives[key]
            fp = sum(per[s][key] for s in negs)
            n_neg = sum(per[s]["patches"] for s in negs)
            recall = tp / max(positives["patches"], 1)
            recall_val = validation[key] / max(validation["patches"], 1)
            fpr = fp / max(n_neg, 1)
            out[f"{label}, {rule}"] = {
                "precision": tp / max(tp + fp, 1),
                "recall": recall,
                "false_positive_rate": fpr,
                "negatives": n_neg,
                # as if cracked and intact patches were equally many (a balanced check)
                "balanced_precision": balanced_precision(recall, fpr),
                "recall_val": recall_val,
                "balanced_precision_val": balanced_precision(recall_val, fpr),
            }
    return out


def balanced_precision(recall: float, false_positive_rate: float) -> float:
    """Precision on a set with as many cracked patches as intact ones.

    Precision depends on the share of cracked patches: this check has 27 cracked test patches
    against 82-187 intact ones, so its raw precision is lower than the same recall and false
    positive rate give on a balanced set (recall / (recall + false positive rate))."""
    return recall / (recall + false_positive_rate) if recall + false_positive_rate > 0 else 0.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--weights", type=Path, default=None, help="crack model (default: shipped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-length-px", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a process setting, as `cracksurvey process --set` (repeatable), e.g. "
                    "verify.min_score=0.2")
    args = ap.parse_args(argv)
    if not (args.data / "masonry_dais2021").is_dir():
        raise SystemExit(f"{args.data}/masonry_dais2021 not found; pass --data")
    import geopandas as gpd

    from cracksurvey.config import parse_set_options
    from cracksurvey.process import process_survey

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="patch-check-") as tmp:
        survey = Path(tmp) / "survey"
        source = build_patches(args.data, survey / "images", args.seed)
        summary = process_survey(survey, out_dir=Path(tmp) / "out", weights=args.weights,
                                 overrides=parse_set_options(args.sets) or None,
                                 use_cache=False)
        if summary.exit_code != 0:
            raise SystemExit(f"process failed: {summary.failed}")
        cracks = gpd.read_file(Path(tmp) / "out" / "cracks.gpkg", layer="cracks")
    found = cracks.groupby("image")["length_px"].sum().to_dict()
    result = score(found, source, args.min_length_px)
    result.update(seconds=time.perf_counter() - t0, cpu=cpu_model(),
                  weights=str(args.weights or "shipped"), settings=args.sets)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Crack or no crack per 224 x 224 patch ({result['weights']}, {result['cpu']}, "
          f"{result['seconds']:.0f} s)\n")
    print("| source | patches | with a crack | with >= "
          f"{args.min_length_px:g} px | mean crack length px |")
    print("|---|---|---|---|---|")
    for src, row in result["sources"].items():
        print(f"| {src} | {row['patches']} | {row['with_crack']} | {row['over_min']} | "
              f"{row['mean_length_px']:.1f} |")
    print("\n| cracked test patches against | precision | recall | intact patches called "
          "cracked | precision, balanced | with validation patches: recall / precision, "
          "balanced |")
    print("|---|---|---|---|---|---|")
    for key, v in result.items():
        if isinstance(v, dict) and "precision" in v:
            print(f"| {key} | {v['precision']:.3f} | {v['recall']:.3f} | "
                  f"{v['false_positive_rate']:.3f} of {v['negatives']} | "
                  f"{v['balanced_precision']:.3f} | {v['recall_val']:.3f} / "
                  f"{v['balanced_precision_val']:.3f} |")
    print("\n(precision, balanced: as many cracked patches as intact ones, as on a balanced "
          "check set; the raw precision above counts 27 cracked patches against all the "
          "intact ones)")
    print("\n| a patch is cracked from (px of crack) | recall (cracked-test) | held-out wall "
          "patches called cracked |")
    print("|---|---|---|")
    for row in result["sweep"]:
        print(f"| {row['min_length_px']:g} | {row['recall']:.3f} | "
              f"{row['held_out_walls_called_cracked']:.3f} |")


if __name__ == "__main__":
    main()
