"""One turn of the field loop, measured: process, correct half a survey, fine-tune, process again.

    python workflows/field_loop.py --data ../shared/data [--steps 300] [--crop-px 128] [--json]

A synthetic survey with known cracks: an intact façade photo kept out of the shipped model's
training (``negatives/spb_facades``, validation photo ``train_img_13``, at half resolution,
1920 x 1080 px, 2 mm per pixel in a façade frame) with real crack geometry darkened into it
(stamps of the ``crackmaps_rezaie2020`` maps, :func:`cracksurvey.train.negatives.
render_synthetic_crack`) in 6 of the 12 cells of 256 px of each half. The ground truth is
the rendered centreline, vectorized. (The shipped model saw synthetic cracks from the same maps
during training, on other photos.)

1. ``cracksurvey process`` with the shipped model.
2. The left half is corrected from the ground truth, as an engineer would in QGIS (the edits
   are written with pyogrio; tests/test_field_loop.py does them in QGIS itself): detected
   cracks lying mostly (over half their length) farther than the slack from a true crack are
   deleted; the parts of true cracks that no kept crack covers are drawn, with their width;
   a ``reviewed`` polygon covers the half.
3. ``cracksurvey finetune`` from the shipped model on that survey.
4. ``cracksurvey process`` again with the fine-tuned model.

Measured on the right half (held back: never reviewed, never trained on), before and after,
in metres of the façade frame: false crack length (detected centreline farther than the
slack, 5 px = 10 mm, from any true crack) and missed crack length (true centreline farther
than the slack from any detection). The reviewed half's numbers show the fit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = "negatives/spb_facades/images/train_img_13.jpg"  # validation: kept out of training
CRACK_MAPS = ("crackmap_RS1_D0p48_Rezaie2020.png", "crackmap_RS3_D0p56_Rezaie2020.png",
              "crackmap_RS6_D0p50_Rezaie2020.png")
GSD_MM = 2.0
CELL_PX = 256
CRACKED_CELLS = 6  # of the 12 cells of each half
SLACK_PX = 5.0


def cracksurvey(*args: str | Path) -> float:
    """Run the cracksurvey command; seconds it took."""
    cmd = [str(Path(sys.executable).with_name("cracksurvey")), *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def synthetic_facade(data: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (3, H, W), true centreline bool (H, W), true crack body bool (H, W))."""
    from cracksurvey.evaluation.datasets import read_mask, read_rgb
    from cracksurvey.train.negatives import cut_stamps, downscale, render_synthetic_crack

    rng = np.random.default_rng(seed)
    image = downscale(read_rgb(data / BACKGROUND), 2).copy()
    stamps = [s for name in CRACK_MAPS
              for s in cut_stamps(read_mask(data / "crackmaps_rezaie2020" / name),
                                  stamp_px=3 * CELL_PX, n=6, rng=rng)]
    centreline = np.zeros(image.shape[1:], bool)
    body = np.zeros(image.shape[1:], bool)
    half = image.shape[2] // 2
    for col0s in ((0, 256, 512), (half + 64, half + 320, half + 576)):  # left, right half
        cells = [(r, c) for r in range(0, image.shape[1] - CELL_PX + 1, CELL_PX) for c in col0s]
        for k in rng.choice(len(cells), CRACKED_CELLS, replace=False):
            r, c = cells[int(k)]
            win = (slice(r, r + CELL_PX), slice(c, c + CELL_PX))
            crop, distance, crack = render_synthetic_crack(
                image[(slice(None), *win)], stamps[int(rng.integers(len(stamps)))], rng)
            image[(slice(None), *win)] = crop
            centreline[win] |= distance == 0
            body[win] |= crack
    return image, centreline, body


def write_survey(folder: Path, image: np.ndarray) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.moveaxis(image, 0, -1)).save(folder / "images" / "facade.png")
    with open(folder / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "building_id", "facade_id", "gsd_mm"])
        w.writerow(["facade.png", "W1", "wall", GSD_MM])
    return folder


def truth_lines(centreline: np.ndarray, body: np.ndarray) -> Any:
    """The true cracks as the crack layer would hold them (façade frame, widths in mm)."""
    from scipy import ndimage

    from cracksurvey.georef import gsd_transform
    from cracksurvey.vectorize import vectorize_skeleton

    rows, cols = np.nonzero(centreline)
    width_px = 2 * ndimage.distance_transform_edt(body)[rows, cols]
    cracks, _ = vectorize_skeleton(rows, cols, transform=gsd_transform(GSD_MM, body.shape[0]),
                                   width_px=np.maximum(width_px, 1.0),
                                   pixel_size_m=GSD_MM / 1000)
    return cracks


def score(detected: Any, truth: Any, box: Any, slack_m: float) -> dict[str, float]:
    """Crack lengths (m) inside ``box``: true, found, false (found far from true), missed."""
    import shapely

    def inside(frame: Any) -> Any:
        lines = shapely.union_all(np.asarray(frame.geometry, dtype=object)) if len(frame) else \
            shapely.LineString()
        return shapely.intersection(lines, box)

    found, true = inside(detected), inside(truth)
    return {"true_m": true.length, "found_m": found.length,
            "false_m": shapely.difference(found, shapely.buffer(true, slack_m)).length,
            "missed_m": shapely.difference(true, shapely.buffer(found, slack_m)).length}


def correct(gpkg: Path, truth: Any, box: Any, slack_m: float) -> dict[str, int]:
    """Correct the crack layer inside ``box`` from the truth; add the ``reviewed`` layer."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely

    cracks = pyogrio.read_dataframe(gpkg, layer="cracks")
    true_zone = shapely.buffer(shapely.union_all(np.asarray(truth.geometry, dtype=object)), slack_m)
    in_box = cracks.geometry.intersection(box)
    reviewed = in_box.length > 0
    near = in_box.intersection(true_zone).length
    false = reviewed & (near < 0.5 * in_box.length)
    kept = cracks[~false]
    kept_zone = shapely.buffer(shapely.union_all(np.asarray(kept.geometry, dtype=object)), slack_m)
    drawn = []
    for geometry, width in zip(truth.geometry, truth.width_mean_mm):
        missing = shapely.difference(shapely.intersection(geometry, box), kept_zone)
        for part in shapely.get_parts(shapely.line_merge(missing)) if not missing.is_empty else []:
            if part.length >= 10 * GSD_MM / 1000:
                drawn.append({"width_mean_mm": float(width), "geometry": shapely.MultiLineString([part])})
    edited = pd.concat([kept, gpd.GeoDataFrame(drawn, geometry="geometry", crs=cracks.crs)],
                       ignore_index=True)
    pyogrio.write_dataframe(edited, gpkg, layer="cracks", layer_options={"OVERWRITE": "YES"})
    pyogrio.write_dataframe(gpd.GeoDataFrame({"note": ["checked"]}, geometry=[box], crs=cracks.crs),
                            gpkg, layer="reviewed", geometry_type="Polygon")
    return {"deleted": int(false.sum()), "kept_in_half": int((reviewed & ~false).sum()),
            "drawn": len(drawn)}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=None, help="default: cracksurvey finetune's")
    ap.add_argument("--crop-px", type=int, default=128,
                    help="crop side (the shipped recipe's 256 costs 4x the CPU time per step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import pyogrio
    import shapely

    work = args.keep or Path(tempfile.mkdtemp(prefix="field-loop-"))
    image, centreline, body = synthetic_facade(args.data, args.seed)
    survey = write_survey(work / "survey", image)
    truth = truth_lines(centreline, body)
    rows, cols = centreline.shape
    half_m, slack_m = cols // 2 * GSD_MM / 1000, SLACK_PX * GSD_MM / 1000
    boxes = {"reviewed half": shapely.box(0, 0, half_m, rows * GSD_MM / 1000),
             "held-back half": shapely.box(half_m, 0, cols * GSD_MM / 1000, rows * GSD_MM / 1000)}
    seconds = {}
    before, after, run = work / "before", work / "after", work / "finetune"
    seconds["process"] = cracksurvey("process", survey, "--out", before, "--overwrite", "-q")
    shutil.copy(before / "cracks.gpkg", work / "found_before.gpkg")  # before the corrections
    edits = correct(before / "cracks.gpkg", truth, boxes["reviewed half"], slack_m)
    lr = ["--lr", args.lr] if args.lr else []
    seconds["finetune"] = cracksurvey("finetune", before, "--run", run, "--steps", args.steps,
                                      "--crop-px", args.crop_px, *lr, "--seed", args.seed,
                                      "--overwrite")
    seconds["process again"] = cracksurvey("process", survey, "--out", after, "--weights",
                                           run / "model.safetensors", "--overwrite", "-q")
    card = json.loads((run / "model.json").read_text())
    results: dict[str, Any] = {"cpu": cpu_name(), "steps": args.steps, "crop_px": args.crop_px,
                               "model": card["lineage"]["parent"]["model_id"],
                               "lr": card["lineage"]["finetune"]["lr"],
                               "edits": edits, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                               "lineage_samples": card["lineage"]["samples"],
                               "threshold": card["lineage"]["threshold"]}
    for label, out in (("shipped", before), ("fine-tuned", after)):
        # the corrected layer of `before` is not what the model found: read its run's copy
        detected = pyogrio.read_dataframe(out / "cracks.gpkg", layer="cracks") if out == after \
            else pyogrio.read_dataframe(work / "found_before.gpkg", layer="cracks")
        results[label] = {name: score(detected, truth, box, slack_m) for name, box in boxes.items()}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"CPU: {results['cpu']}; edits on the reviewed half: {edits}; "
              f"{args.steps} steps at lr {results['lr']:g}; seconds: {results['seconds']}")
        print(f"{'model':11s} {'half':15s} {'true m':>7s} {'found m':>8s} {'false m':>8s} {'missed m':>9s}")
        for label in ("shipped", "fine-tuned"):
            for name, r in results[label].items():
                print(f"{label:11s} {name:15s} {r['true_m']:7.2f} {r['found_m']:8.2f} "
                      f"{r['false_m']:8.2f} {r['missed_m']:9.2f}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    raise SystemExit(main())
