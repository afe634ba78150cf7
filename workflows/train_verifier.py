"""Train the crack verifier (cracksurvey.verify) on the crack layer of the shipped crack model.

    # 1. patches around every crack of the crack layer, labelled (minutes; packed data of retrain.py)
    python workflows/train_verifier.py mine --data runs/data --crack-data ../shared/data --split val
    python workflows/train_verifier.py mine --data runs/data --split train
    # 2. train, calibrate on validation, write the weights and card
    python workflows/train_verifier.py train --out cracksurvey/weights/cracksurvey-crack-verifier
    # or only calibrate existing weights again (weights unchanged; the card's min_score and metrics)
    python workflows/train_verifier.py calibrate --weights cracksurvey/weights/cracksurvey-crack-verifier.safetensors

Mining runs the shipped crack model and the crack layer's own rule (threshold, skeleton, gap
bridging, spur pruning, minimum length: ``crack_layer_skeleton``) on

- the crack datasets (masonry_dais2021, deepcrack, cfd, mcs_marble, uav75: training splits
  for training, validation splits for validation):
  a component with half its pixels within 3 px of the ground truth is a crack, one with at most
  5 % within 10 px is not (the ones in between are left out);
- the intact façades (labelmefacade at full size, spb_facades at full size, 1/2 and 1/4 for
  training, at 1/4 for validation): every component is not a crack;
- synthetic cracks (crack-map stamps darkened into 384-px crops of the same intact façades):
  a component with half its pixels within 3 px of the synthetic centreline is a crack.

Each component gives up to six 64-px patches centred on its pixels, tagged with its component
(a group) and its kind of photo. Each training batch takes a quarter from each (label, kind of
photo) pair, with flips and quarter turns. ``min_score`` is calibrated on validation: the
highest threshold that keeps ``--keep`` (default 0.95) of the validation cracks of each kind of
photo (the five crack datasets' validation splits together; synthetic cracks on the held-out
façades), a crack scored as the pipeline scores it (the mean of its patches). Until 2026-11-30
the crack datasets' part was masonry validation alone: 17 cracks, so the faintest of them set
the threshold by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cracksurvey.config import Border

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATCH = 64
PER = 6
#: Crack datasets whose training splits give cracks (and non-cracks far from their ground truth).
CRACK_SETS = ("masonry_dais2021", "deepcrack", "cfd", "mcs_marble", "uav75")


def mine(
    data: Path,
    split: str,
    out: Path,
    *,
    n_synthetic: int,
    seed: int = 0,
    spb_scales: tuple[int, ...] = (1, 2, 4),
    crack_data: Path | None = None,
    patch: int = PATCH,
    inner: bool = False,
    border: Border = "image",
    synthetic_noise: bool = False,
    n_patterns: int = 0,
) -> None:
    import dataclasses

    from scipy import ndimage

    from cracksurvey.config import VectorizeConfig
    from cracksurvey.evaluation.datasets import list_pairs, read_mask, read_rgb
    from cracksurvey.evaluation.evaluate import crack_layer_skeleton
    from cracksurvey.model import load_model
    from cracksurvey.tiling import predict_tiled
    from cracksurvey.train.negatives import (
        SyntheticStyle,
        load_negatives,
        load_stamps,
        negative_crop,
        render_line_pattern,
        render_synthetic_crack,
    )
    from cracksurvey.verify import read_patches

    # the renderer's noise covers the synthetic cracks' crops only, never the intact façades':
    # noise would tell the two apart (capture_augment adds noise to both at training instead)
    style = SyntheticStyle() if synthetic_noise else dataclasses.replace(SyntheticStyle(), noise=(0.0, 0.0))

    rng = np.random.default_rng(seed)
    model, card = load_model(None)
    vcfg = VectorizeConfig()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    groups: list[int] = []
    kinds: list[int] = []
    next_group = [0]

    def components(image: np.ndarray) -> tuple[np.ndarray, int]:
        distance, _ = predict_tiled(image, model, card, core_px=1280, halo_px=96, border=border)
        skeleton, _ = crack_layer_skeleton(distance, threshold_px=card.threshold_px, vectorize=vcfg)
        return ndimage.label(skeleton, structure=np.ones((3, 3)))

    def share_near(lab: np.ndarray, n: int, target: np.ndarray, radius: int) -> np.ndarray:
        near = ndimage.binary_dilation(target, iterations=radius)
        return np.asarray(ndimage.mean(near, lab, index=np.arange(1, n + 1))) if n else np.zeros(0)

    def add(image: np.ndarray, lab: np.ndarray, n: int, labels: dict[int, int], kind: int) -> None:
        objs = ndimage.find_objects(lab)
        for i, label in labels.items():
            sl = objs[i - 1]
            rr, cc = np.nonzero(lab[sl] == i)
            if inner:  # centres whose patch lies inside the image, where the component has any
                r_abs, c_abs = rr + sl[0].start, cc + sl[1].start
                h, w = image.shape[1:]
                ok = (r_abs >= patch // 2) & (r_abs < h - patch // 2)
                ok &= (c_abs >= patch // 2) & (c_abs < w - patch // 2)
                if ok.any():
                    rr, cc = rr[ok], cc[ok]
            pick = rng.choice(rr.size, min(PER, rr.size), replace=False)
            rows, cols = rr[pick] + sl[0].start, cc[pick] + sl[1].start
            patches = read_patches(image, rows, cols, patch)
            xs.append(patches)
            ys.extend([label] * len(patches))
            groups.extend([next_group[0] + i] * len(patches))
            kinds.extend([kind] * len(patches))
        next_group[0] += n + 1

    t0 = time.time()
    for name in CRACK_SETS:
        for pair in list_pairs((crack_data or data) / name, split):
            image, gt = read_rgb(pair.image), read_mask(pair.mask)
            lab, n = components(image)
            on, far = share_near(lab, n, gt, 3), share_near(lab, n, gt, 10)
            labels = {i + 1: 1 for i in range(n) if on[i] >= 0.5}
            labels.update({i + 1: 0 for i in range(n) if far[i] <= 0.05})
            add(image, lab, n, labels, 0)
    print(f"crack datasets: {len(ys)} patches, {sum(ys)} on cracks ({time.time() - t0:.0f} s)", flush=True)
    backgrounds = []
    for name, scales in (("labelmefacade", (1,)), ("spb_facades", spb_scales if split == "train" else (4,))):
        for neg in load_negatives(data / "negatives" / name, split, scales=scales):
            lab, n = components(neg.image)
            add(neg.image, lab, n, {i: 0 for i in range(1, n + 1)}, 1)
            backgrounds.append(neg)
    stamps = load_stamps(data / "crack_stamps.npz")
    for _ in range(n_synthetic):
        neg = backgrounds[int(rng.integers(len(backgrounds)))]
        crop = negative_crop(neg, 384, rng, hot_share=0.0)
        image, distance, _ = render_synthetic_crack(
            crop, stamps[int(rng.integers(len(stamps)))], rng, style=style
        )
        lab, n = components(image)
        on = share_near(lab, n, distance <= 1.0, 3)
        add(image, lab, n, {i + 1: 1 for i in range(n) if on[i] >= 0.5}, 1)
    n_before = len(ys)
    for _ in range(n_patterns):
        # man-made line patterns (railings, grilles, joints, cables) on the same façade crops:
        # the crack layer's components along them are not cracks; a third of the crops also get
        # a synthetic crack across the pattern, whose components are cracks
        neg = backgrounds[int(rng.integers(len(backgrounds)))]
        crop = negative_crop(neg, 384, rng, hot_share=0.0)
        image, lines = render_line_pattern(crop, rng, style=style)
        crack = np.zeros_like(lines)
        if rng.random() < 1 / 3:
            image, distance, _ = render_synthetic_crack(
                image, stamps[int(rng.integers(len(stamps)))], rng, style=style
            )
            crack = distance <= 1.0
        lab, n = components(image)
        on_lines, on_crack = share_near(lab, n, lines, 3), share_near(lab, n, crack, 3)
        labels = {i + 1: 0 for i in range(n) if on_lines[i] >= 0.5 and on_crack[i] < 0.2}
        labels.update({i + 1: 1 for i in range(n) if on_crack[i] >= 0.5})
        add(image, lab, n, labels, 1)
    if n_patterns:
        print(f"line patterns: {len(ys) - n_before} patches ({time.time() - t0:.0f} s)", flush=True)
    y, g, k = np.array(ys), np.array(groups), np.array(kinds)
    for kind, what in ((0, "crack datasets"), (1, "façades")):
        m = k == kind
        print(
            f"{what}: {m.sum()} patches; components: {len(np.unique(g[m & (y == 1)]))} cracks, "
            f"{len(np.unique(g[m & (y == 0)]))} not",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, X=np.concatenate(xs), y=y, g=g, kind=k)
    print(f"{out} ({time.time() - t0:.0f} s)")


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(scores)
    n1 = int(labels.sum())
    n0 = labels.size - n1
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / max(1, n1 * n0))


def group_scores(scores: np.ndarray, y: np.ndarray, g: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per component: mean patch score, label, kind."""
    ids, inverse = np.unique(g, return_inverse=True)
    mean = np.bincount(inverse, weights=scores) / np.bincount(inverse)
    first = np.zeros(ids.size, np.int64)
    first[inverse[::-1]] = np.arange(g.size)[::-1]
    return mean, y[first], k[first]


def rule_threshold(comp: np.ndarray, label: np.ndarray, kind: np.ndarray, *, keep: float) -> float:
    """The highest threshold that keeps ``keep`` of the cracks (``label`` 1) of each kind of
    photo, from per-component scores (0.5 without any crack)."""
    limits = []
    for kd in (0, 1):
        cracks = np.sort(comp[(label == 1) & (kind == kd)])
        if cracks.size:
            limits.append(float(cracks[int(np.floor((1.0 - keep) * cracks.size))]))
    return min(limits) if limits else 0.5


def capture_augment(x: np.ndarray, rng: np.random.Generator, *, p_blur: float = 0.3,
                    p_noise: float = 0.5, p_jpeg: float = 0.4) -> np.ndarray:
    """Each uint8 patch ``(n, 3, p, p)`` captured again as a camera might have: a slight blur
    (σ 0.3-1.2 px), sensor noise (σ 0.5-4 grey levels) and a JPEG round trip (quality 40-95),
    each at random and for cracks and non-cracks alike.

    Without it the verifier learnt the photos' noise as a sign of cracks: its training cracks
    come from noisy close-up photos and synthetic cracks rendered with noise, its non-cracks
    largely from façade photos downscaled 2-4 times (smooth). Noise of half a grey level raised
    a real crack's score from 0.3 to 0.8, one grey level to 1.0, and a PNG and a JPEG of the same
    crop (pixels 0.3 grey levels apart) kept 8 and 13 cracks.
    """
    import io

    from PIL import Image, ImageFilter

    out = x.copy()
    for i in range(out.shape[0]):
        patch = out[i]
        if rng.random() < p_blur:
            im = Image.fromarray(np.ascontiguousarray(patch.transpose(1, 2, 0)))
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
            patch = np.asarray(im).transpose(2, 0, 1)
        if rng.random() < p_noise:
            noisy = patch + rng.normal(0.0, rng.uniform(0.5, 4.0), patch.shape)
            patch = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if rng.random() < p_jpeg:
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(patch.transpose(1, 2, 0))).save(
                buffer, format="JPEG", quality=int(rng.integers(40, 96))
            )
            patch = np.asarray(Image.open(buffer).convert("RGB")).transpose(2, 0, 1)
        out[i] = patch
    return out


def fit(make_net, tr, *, steps: int, seed: int, log: bool = True, augment: bool = True):  # noqa: ANN001, ANN201
    """Train ``make_net()`` (built after seeding) on the patches ``tr`` (X, y, kind): batches
    of 64 drawn a quarter from each (label, kind of photo) pair, flips and quarter turns and,
    with ``augment``, each patch captured again (:func:`capture_augment`), AdamW with a
    one-cycle learning rate. Returns the network in eval mode."""
    import torch

    from cracksurvey.verify import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    x_train, y_train = torch.from_numpy(tr["X"]), torch.from_numpy(tr["y"]).float()
    # each batch: cracks and non-cracks, each half from either kind of photo (the crack
    # datasets' components are fewer than the façades')
    pools = [np.nonzero((tr["y"] == label) & (tr["kind"] == kind))[0] for label in (1, 0) for kind in (0, 1)]
    net = make_net()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None] * 255.0
    std = torch.tensor(IMAGENET_STD)[:, None, None] * 255.0
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        idx = np.concatenate([rng.choice(pool, 16) for pool in pools])
        x = x_train[idx]
        if augment:
            x = torch.from_numpy(capture_augment(x.numpy(), rng))
        if rng.random() < 0.5:
            x = x.flip(3)
        if rng.random() < 0.5:
            x = x.flip(2)
        x = torch.rot90(x, int(rng.integers(4)), (2, 3))
        logits = net((x.float() - mean) / std)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % 500 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    return net.eval()


def calibrate(net, card, va, *, keep: float) -> tuple[float, dict[str, object]]:  # noqa: ANN001
    """``min_score`` = the highest threshold that keeps ``keep`` of the validation cracks of
    each kind of photo (crack datasets, façades with synthetic cracks), with the metrics."""
    from cracksurvey.verify import score_patches

    scores = score_patches(net, card, va["X"])
    comp, label, kind = group_scores(scores, va["y"], va["g"], va["kind"])
    min_score = rule_threshold(comp, label, kind, keep=keep)
    metrics: dict[str, object] = {
        "validation_auc_patches": _auc(scores, va["y"]),
        "validation_auc_cracks": _auc(comp, label),
        "min_score_rule": f"highest threshold keeping {keep:.0%} of the validation cracks of each kind of photo",
    }
    for kd, what in ((0, "crack_datasets"), (1, "facades")):
        m = kind == kd
        pos, neg = m & (label == 1), m & (label == 0)
        metrics[f"validation_{what}"] = {
            "cracks": int(pos.sum()),
            "not_cracks": int(neg.sum()),
            "cracks_kept": float((comp[pos] >= min_score).mean()) if pos.any() else None,
            "not_cracks_kept": float((comp[neg] >= min_score).mean()) if neg.any() else None,
        }
    return min_score, metrics


def recalibrate(weights: Path, val_npz: Path, *, keep: float) -> None:
    """Calibrate ``min_score`` of existing verifier weights again on ``val_npz`` and rewrite
    their card (the weights and their checksum are unchanged)."""
    import dataclasses

    from cracksurvey.verify import load_verifier

    net, card = load_verifier(weights)
    min_score, metrics = calibrate(net, card, np.load(val_npz), keep=keep)
    notes = dict(card.notes, calibrated_on=val_npz.name, previous_min_score=card.min_score)
    card = dataclasses.replace(card, min_score=round(min_score, 4), metrics=metrics, notes=notes)
    weights.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(card), indent=2))
    print(json.dumps(metrics, indent=1))
    print(f"min_score {notes['previous_min_score']} -> {card.min_score}; wrote {weights.with_suffix('.json')}")


def train(
    train_npz: Path, val_npz: Path, out: Path, *, steps: int, keep: float, seed: int, augment: bool = True
) -> None:

    from cracksurvey.model import load_model
    from cracksurvey.verify import CrackVerifier, VerifierCard, save_verifier

    tr, va = np.load(train_npz), np.load(val_npz)
    net = fit(CrackVerifier, tr, steps=steps, seed=seed, augment=augment)
    card = VerifierCard(model_id="cracksurvey-crack-verifier", patch_px=PATCH, points_per_crack=PER)
    min_score, metrics = calibrate(net, card, va, keep=keep)
    _, crack_card = load_model(None)
    card = VerifierCard(
        model_id="cracksurvey-crack-verifier",
        patch_px=PATCH,
        points_per_crack=PER,
        min_score=round(min_score, 4),
        crack_model=f"{crack_card.model_id} at threshold {crack_card.threshold_px} px",
        crack_model_sha256=crack_card.sha256,
        training_data=[
            {"name": ", ".join(CRACK_SETS), "use": "crack layer components on / far from the ground truth (training splits)"},
            {"name": "labelmefacade, spb_facades", "use": "crack layer components on intact façades (training photos); background of synthetic cracks"},
            {"name": "crackmaps_rezaie2020", "use": "synthetic crack stamps"},
        ],
        metrics=metrics,
        notes={"reproduce": "python workflows/train_verifier.py mine --split val|train; python workflows/train_verifier.py train", "steps": steps, "seed": seed,
               "augment": "capture_augment (blur, noise, JPEG) on every batch" if augment else "none"},
        licence="research and non-commercial use (labelmefacade; the crack datasets' own terms)",
    )
    card = save_verifier(net, card, out)
    print(json.dumps(metrics, indent=1))
    print(f"min_score {card.min_score}; wrote {out}.safetensors ({card.sha256[:12]})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mine")
    m.add_argument("--data", type=Path, default=ROOT / "runs/data", help="packed data (workflows/retrain.py pack)")
    m.add_argument("--split", choices=("train", "val"), required=True)
    m.add_argument("--out", type=Path, default=None)
    m.add_argument("--crack-data", type=Path, default=None,
                   help="where the crack datasets are (default: --data; the packed data holds "
                   "only masonry's validation split, so pass the original data with --split val)")
    m.add_argument("--synthetic", type=int, default=None, help="synthetic crack crops (700 train, 150 val)")
    m.add_argument("--spb-scales", type=int, nargs="+", default=[1, 2, 4],
                   help="downscale factors of the training spb photos (1: full size, as process sees "
                   "a street façade at 3 mm/px; the verifier shipped until 2026-12-01 had 2 4)")
    m.add_argument("--inner", action="store_true",
                   help="patch centres only where the patch lies inside the image (no reflected "
                   "border in a patch) when the component has such pixels")
    m.add_argument("--patch", type=int, default=PATCH,
                   help="patch side (px); larger patches keep the same centres (context experiments)")
    m.add_argument("--border", choices=("reflect", "image"), default="image",
                   help="what the crack model's tiles see beyond an image's edge (tiling.border): "
                   "process runs image since the eleventh session of 2026-11-30 and the shipped "
                   "verifier's data were mined so; reflect made the verifier shipped until 2026-12-01")
    m.add_argument("--synthetic-noise", action="store_true",
                   help="render the synthetic cracks with the crack model's noise (the data of the "
                   "verifier shipped until 2026-12-01: only its cracks were noisy)")
    m.add_argument("--patterns", type=int, default=0,
                   help="façade crops with a man-made line pattern (railing, grille, joints, cables: "
                   "not cracks; cracks drawn across a third of them). Default 0, as the shipped verifier "
                   "was mined; 300 (val 60) was trained and measured and did not ship (docs/training.md)")
    t = sub.add_parser("train")
    t.add_argument("--train", type=Path, default=ROOT / "runs/verifier/train.npz")
    t.add_argument("--val", type=Path, default=ROOT / "runs/verifier/val.npz")
    t.add_argument("--out", type=Path, default=ROOT / "cracksurvey/weights/cracksurvey-crack-verifier")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--keep", type=float, default=0.95)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-augment", action="store_true",
                   help="train without capture_augment (the verifier shipped until 2026-12-01)")
    c = sub.add_parser("calibrate")
    c.add_argument("--weights", type=Path, default=ROOT / "cracksurvey/weights/cracksurvey-crack-verifier.safetensors")
    c.add_argument("--val", type=Path, default=ROOT / "runs/verifier/val.npz")
    c.add_argument("--keep", type=float, default=0.95)
    args = ap.parse_args(argv)
    if args.cmd == "calibrate":
        recalibrate(args.weights, args.val, keep=args.keep)
    elif args.cmd == "mine":
        out = args.out or ROOT / f"runs/verifier/{args.split}.npz"
        n_synth = args.synthetic if args.synthetic is not None else (700 if args.split == "train" else 150)
        mine(args.data, args.split, out, n_synthetic=n_synth, spb_scales=tuple(args.spb_scales),
             crack_data=args.crack_data, patch=args.patch, inner=args.inner, border=args.border,
             synthetic_noise=args.synthetic_noise,
             n_patterns=args.patterns)
    else:
        train(args.train, args.val, args.out, steps=args.steps, keep=args.keep, seed=args.seed,
              augment=not args.no_augment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
