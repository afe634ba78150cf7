"""The narrowest crack a model finds: detection rate against crack width on real wall textures.

    python workflows/detection_limit.py [--weights W] [--data ../shared/data] [--write-card]

Cracks of known constant width (0.2 - 3 px) along real seismic crack centrelines (the crack
maps of tested masonry walls, scaled to 256-px crops), with area coverage rendered at 8x
supersampling (a sub-pixel crack darkens a pixel by its share of it), darkening 30-70 %,
Gaussian blur sigma 0.7 px, are drawn on 256-px crops of real intact façades (scikit-image's
brick photo and the spb_facades street façades). Each crop is predicted
whole and thresholded at the card's threshold; the share of the drawn centreline with a
predicted centreline within 2 px is what was found.

The detection limit is the width at which the model finds half of what it finds on the widest
cracks (linear interpolation between the measured widths): below it a crack mostly vanishes. ``--write-card`` stores it in the model
card's notes (``detection_limit_px``), where ``process`` reads it to give every image a
detection limit in millimetres (limit in pixels times the GSD).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS_PX = (0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
SUPERSAMPLE = 8


def textures(data: Path, rng: np.random.Generator, n: int, size: int = 256) -> list[np.ndarray]:
    """Crops of intact walls: the brick photo, and street façades when available."""
    from skimage import data as skdata

    sources = [np.repeat(skdata.brick()[None], 3, 0)]
    spb = data / "negatives" / "spb_facades" / "images"
    if spb.is_dir():
        from cracksurvey.evaluation.datasets import read_rgb

        for path in sorted(spb.glob("*.jpg"))[:6]:
            image = read_rgb(path)
            sources.append(image[:, ::2, ::2])  # about 6 mm per pixel
    crops = []
    for i in range(n):
        src = sources[i % len(sources)]
        r = int(rng.integers(0, src.shape[1] - size))
        c = int(rng.integers(0, src.shape[2] - size))
        crops.append(np.ascontiguousarray(src[:, r : r + size, c : c + size]))
    return crops


def crack_centrelines(data: Path, rng: np.random.Generator, n: int, size: int = 256) -> list[np.ndarray]:
    """Real crack centrelines (seismic crack maps of masonry walls, scaled to ``size`` px),
    at the supersampled resolution: bool (size * 8, size * 8)."""
    from PIL import Image

    from cracksurvey.skeleton import skeletonize_mask
    from cracksurvey.train.negatives import cut_stamps, list_crack_maps

    Image.MAX_IMAGE_PIXELS = None
    maps = list_crack_maps(data / "crackmaps_rezaie2020")
    lines = []
    side = size * 3  # map pixels per crop: 1/3 scale, a wall patch of ~35 cm
    while len(lines) < n:
        with Image.open(maps[int(rng.integers(len(maps)))]) as im:
            crack_map = np.asarray(im.convert("L")) > 127
        for stamp in cut_stamps(crack_map, stamp_px=side, n=4, rng=rng):
            if stamp.skeleton.sum() < side // 2:
                continue
            # the centreline on the supersampled grid of the crop (8 / 3 per map pixel)
            s = SUPERSAMPLE * size
            rows, cols = np.nonzero(stamp.skeleton)
            fine = np.zeros((s, s), bool)
            fine[(rows * s) // side, (cols * s) // side] = True
            lines.append(skeletonize_mask(ndimage.binary_dilation(fine, iterations=2)))
    return lines[:n]


def render(
    background: np.ndarray, centreline: np.ndarray, width_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A crack of ``width_px`` along a supersampled centreline: image uint8 (3, H, W) and the
    centreline at image resolution (bool)."""
    _, h, w = background.shape
    s = SUPERSAMPLE
    to_line = ndimage.distance_transform_edt(~centreline) / s  # image pixels
    coverage = (to_line <= width_px / 2).reshape(h, s, w, s).mean((1, 3))
    shade = ndimage.gaussian_filter(coverage, 0.7) * rng.uniform(0.3, 0.7)
    image = background.astype(np.float32) * (1 - shade)[None]
    centre = centreline.reshape(h, s, w, s).any((1, 3))
    margin = np.zeros_like(centre)
    margin[16:-16, 16:-16] = True
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), centre & margin


def measure(weights: str | None, data: Path, *, per_width: int, seed: int) -> dict[str, object]:
    from cracksurvey.model import load_model
    from cracksurvey.skeleton import skeletonize_mask
    from cracksurvey.tiling import predict_untiled

    model, card = load_model(weights)
    rng = np.random.default_rng(seed)
    crops = textures(data, rng, per_width)
    lines = crack_centrelines(data, rng, per_width)
    rates = {}
    for width in WIDTHS_PX:
        found = 0.0
        for crop, line in zip(crops, lines, strict=True):
            image, centre = render(crop, line, width, rng)
            distance, _ = predict_untiled(image, model, card, halo_px=0)
            skeleton = skeletonize_mask(distance <= card.threshold_px)
            if skeleton.any():
                found += float((ndimage.distance_transform_edt(~skeleton)[centre] <= 2.0).mean())
        rates[width] = found / len(crops)
        print(f"width {width:4.1f} px: centreline found {rates[width]:.0%}", flush=True)
    widths = np.array(WIDTHS_PX)
    rate = np.array([rates[w] for w in WIDTHS_PX])
    above = np.flatnonzero(rate >= 0.5 * rate.max()) if rate.max() > 0 else np.zeros(0, int)
    if above.size == 0:
        limit = float("nan")
    elif above[0] == 0:
        limit = float(widths[0])
    else:
        i = above[0]
        w0, w1, r0, r1 = widths[i - 1], widths[i], rate[i - 1], rate[i]
        half = 0.5 * rate.max()
        limit = float(w0 + (half - r0) * (w1 - w0) / (r1 - r0))
    return {
        "model_id": card.model_id,
        "sha256": card.sha256,
        "centreline_found": {str(w): round(r, 3) for w, r in rates.items()},
        "detection_limit_px": round(limit, 2),
        "protocol": (
            f"{per_width} cracks per width on 256-px crops of intact walls (brick photo, street "
            "façades at ~6 mm/px), real crack centrelines, darkening 30-70 %, blur sigma 0.7 px; "
            "found = share of the centreline within 2 px of a predicted centreline; limit = the "
            "width at which half of the widest cracks' share is found (workflows/detection_limit.py)"
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--per-width", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-card", action="store_true", help="store the limit in the card's notes")
    args = ap.parse_args()
    result = measure(args.weights, args.data, per_width=args.per_width, seed=args.seed)
    print(json.dumps(result, indent=1))
    if args.write_card:
        from cracksurvey.model import default_weights_path, read_card

        path = Path(args.weights) if args.weights else default_weights_path()
        card = read_card(path)
        notes = {**card.notes, "detection_limit_px": result["detection_limit_px"],
                 "detection_limit": {k: result[k] for k in ("centreline_found", "protocol")}}
        path.with_suffix(".json").write_text(dataclasses.replace(card, notes=notes).to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
