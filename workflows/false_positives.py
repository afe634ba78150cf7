"""False cracks on intact façades: crack length per megapixel and damage level, per model.

    python workflows/false_positives.py --data ../shared/data \
        --weights cracksurvey/weights/OLD.safetensors --weights runs/new/model.safetensors

For each model, `cracksurvey process` runs (the real pipeline: tiling, vectorization, semantics
when the model set has it, damage levels) on two surveys of intact buildings built in a temporary
folder:

- ``facades``: the four Sceaux castle photos (``facades/``), one building each, at the ground
  sampling distances a user would set for them (12-20 mm per pixel);
- ``spb-val``: the validation part of ``negatives/spb_facades`` (street façades kept out of
  training), one building each, at 3 mm per pixel;
- ``lmf-val``: the validation part of ``negatives/labelmefacade`` (45 street photos of four
  source sets kept out of training, about 683 x 512, a storey 60-150 px high), one building
  each, at 30 mm per pixel (a 3.5-4.5 m storey over about 130 px).

Every crack found there is false. The table gives, per model and survey: cracks, total length,
false crack length per megapixel of image (pixels of crack centreline per million image pixels)
and per megapixel of wall where the façade semantics are known, the highest damage level of any
building (all must be <= 1) and how many buildings are not assessable at their GSD (``n/a``).
Results as JSON with --json. The ablation of the façade semantics:
``... --weights shipped -- --set semantics.mode=off``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cracksurvey.train.negatives import negative_split

ROOT = Path(__file__).resolve().parents[1]

FACADE_GSD_MM = {  # plausible user-set GSDs for the four photos (oblique far ... close)
    "sceaux_castle_100_7100": 20,
    "sceaux_castle_100_7104": 16,
    "sceaux_castle_100_7108": 12,
    "sceaux_castle_100_7110": 12,
}
SPB_VAL = ("train_img_13", "train_img_250", "train_img_7")
SPB_GSD_MM = 3
LMF_GSD_MM = 30


def make_survey(folder: Path, images: list[tuple[Path, float]]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for path, gsd in images:
        link = folder / "images" / path.name
        if not link.exists():
            os.symlink(path.resolve(), link)
        rows.append({"image": path.name, "building_id": path.stem, "facade_id": path.stem, "gsd_mm": gsd})
    with open(folder / "images.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "building_id", "facade_id", "gsd_mm"])
        w.writeheader()
        w.writerows(rows)
    return folder


def measure(survey: Path, out: Path, weights: str | None, extra: list[str]) -> dict[str, Any]:
    import pyogrio

    cmd = [str(Path(sys.executable).with_name("cracksurvey")), "process", str(survey), "--out", str(out), "--overwrite"]
    if weights:
        cmd += ["--weights", weights]
    cmd += extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    gpkg = out / "cracks.gpkg"
    import pandas as pd

    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    # one cracks_/images_ layer per georeferencing frame; cracks_3d repeats the façade cracks
    # frames have different CRSs: attributes only
    def table(name: str) -> pd.DataFrame:
        return pyogrio.read_dataframe(gpkg, layer=name, read_geometry=False)

    cracks = pd.concat([table(n) for n in layers if n.startswith("cracks_") and n != "cracks_3d"])
    images = pd.concat([table(n) for n in layers if n.startswith("images_")])
    buildings = table("buildings")
    pixels = float(images["valid_px"].sum())
    length_px = float(cracks["length_px"].sum()) if len(cracks) else 0.0
    wall_px = float(images["wall_px"].sum()) if "wall_px" in images else float("nan")
    levels = [None if v != v else int(v) for v in buildings["damage_level"].astype(float)]
    labels = list(buildings["damage_label"])
    return {
        "cracks": len(cracks),
        "length_m": float(cracks["length_m"].sum()) if len(cracks) else 0.0,
        "length_px": length_px,
        "image_mp": pixels / 1e6,
        "fp_px_per_mp": length_px / pixels * 1e6 if pixels else float("nan"),
        "fp_px_per_wall_mp": length_px / wall_px * 1e6 if wall_px == wall_px and wall_px > 0 else None,
        "max_level": max((v for v in levels if v is not None), default=None),
        "not_assessable": sum(str(label).startswith("not assessable") for label in labels),
        "levels": dict(zip(buildings["building_id"], levels, strict=False)),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--weights", action="append", default=[], help="model .safetensors; repeat; 'shipped' = the default model")
    ap.add_argument("--only", choices=["facades", "spb-val", "lmf-val"], default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("process_args", nargs="*", help="extra arguments for cracksurvey process (after --)")
    args = ap.parse_args()
    weights = args.weights or ["shipped"]
    surveys = {
        "facades": [(args.data / "facades" / f"{k}.jpg", v) for k, v in FACADE_GSD_MM.items()],
        "spb-val": [(args.data / "negatives/spb_facades/images" / f"{k}.jpg", SPB_GSD_MM) for k in SPB_VAL],
        "lmf-val": [
            (p, LMF_GSD_MM)
            for p in sorted((args.data / "negatives/labelmefacade/images").glob("*.jpg"))
            if negative_split(p.stem, "labelmefacade") == "val"
        ],
    }
    if args.only:
        surveys = {args.only: surveys[args.only]}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, images in surveys.items():
            missing = [str(p) for p, _ in images if not p.exists()]
            if missing:
                raise SystemExit(f"missing images: {missing}; pass --data pointing at the shared data folder")
            make_survey(Path(tmp) / name, images)
        for w in weights:
            results[w] = {}
            for name in surveys:
                results[w][name] = measure(
                    Path(tmp) / name, Path(tmp) / f"out-{len(results)}-{name}", None if w == "shipped" else w, args.process_args
                )
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'model':50s} {'survey':8s} {'cracks':>6s} {'length m':>9s} {'px/MP':>8s} {'px/wall MP':>10s} {'max level':>9s} {'n/a':>4s} {'s':>6s}")
    for w, per in results.items():
        for name, r in per.items():
            wall = "—" if r["fp_px_per_wall_mp"] is None else f"{r['fp_px_per_wall_mp']:.0f}"
            print(f"{Path(w).parent.name + '/' + Path(w).name if w != 'shipped' else 'shipped':50s} {name:8s} {r['cracks']:6d} "
                  f"{r['length_m']:9.1f} {r['fp_px_per_mp']:8.0f} {wall:>10s} {r['max_level']!s:>9s} "
                  f"{r['not_assessable']:4d} {r['wall_s']:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
