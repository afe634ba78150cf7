"""Training the façade-semantics model: wall, opening (window, door) and background per pixel.

A small TernausNet with three class logits, trained on street façades with pixel labels (the
labelmefacade layout: ``images/<name>.jpg`` and colour-coded ``labels/<name>.png``). It runs at
low resolution (a storey is about 60-150 px in the training images), so crops are taken after a
random rescale of the whole image, and the model later runs on a downsampled copy of each survey
image. The unlabelled "various" class is ignored by the loss.

Selection: mean IoU of the three classes on the validation part (split by source set).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError
from ..evaluation.datasets import read_rgb
from ..model import IMAGENET_MEAN, IMAGENET_STD, Architecture, ModelCard, TernausNet, save_model
from .negatives import LABELMEFACADE_CLASSES, negative_split

log = logging.getLogger(__name__)

CLASSES = ("wall", "opening", "background")
IGNORE = 255


@dataclass(frozen=True)
class SemanticsConfig:
    name: str = "cracksurvey-facade-semantics"
    seed: int = 27
    architecture: Architecture = "unet16"
    width: float = 0.25
    data: str = "../shared/data/negatives/labelmefacade"
    crop_px: int = 320
    batch_size: int = 16
    steps: int = 3000
    time_budget_s: float = 0.0
    lr: float = 2e-3
    scale_range: tuple[float, float] = (0.5, 1.3)
    val_every: int = 250
    licence_note: str = (
        "Trained on labelmefacade (Fröhlich et al., ICPR 2010; images from MIT LabelMe): "
        "non-commercial research use only, and so are these weights."
    )


def decode_labels(rgb: np.ndarray) -> np.ndarray:
    """Colour-coded label image (3, H, W) uint8 -> class index (H, W) uint8 (255 = ignore)."""
    out = np.full(rgb.shape[1:], IGNORE, np.uint8)
    for colour, cls in LABELMEFACADE_CLASSES.items():
        hit = (rgb[0] == colour[0]) & (rgb[1] == colour[1]) & (rgb[2] == colour[2])
        out[hit] = cls
    return out


def load_labelled_facades(root: str | Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image uint8 (3, H, W), classes uint8 (H, W)) of one split."""
    root = Path(root)
    out = []
    for path in sorted((root / "images").glob("*.jpg")):
        if negative_split(path.stem, root.name) != split:
            continue
        label = root / "labels" / (path.stem + ".png")
        if not label.exists():
            raise DatasetError(f"{path}: no label image {label.name} in {label.parent}")
        out.append((path.stem, read_rgb(path), decode_labels(read_rgb(label))))
    if not out:
        raise DatasetError(f"{root}: no {split} images")
    return out


def _resize(x: torch.Tensor, size: tuple[int, int], *, labels: bool) -> torch.Tensor:
    if labels:
        return F.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return F.interpolate(
        x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def _crop_batch(
    data: list[tuple[str, np.ndarray, np.ndarray]], cfg: SemanticsConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    c = cfg.crop_px
    for _ in range(cfg.batch_size):
        _, img, lab = data[int(rng.integers(len(data)))]
        s = float(rng.uniform(*cfg.scale_range))
        h, w = lab.shape
        size = (max(8, round(h * s)), max(8, round(w * s)))
        ti = _resize(torch.from_numpy(img), size, labels=False)
        tl = _resize(torch.from_numpy(lab), size, labels=True)
        ph, pw = max(0, c - size[0]), max(0, c - size[1])
        if ph or pw:
            ti = F.pad(ti, (0, pw, 0, ph), mode="constant", value=0.0)
            tl = F.pad(tl, (0, pw, 0, ph), value=IGNORE)
        r0 = int(rng.integers(0, ti.shape[1] - c + 1))
        c0 = int(rng.integers(0, ti.shape[2] - c + 1))
        ti = ti[:, r0 : r0 + c, c0 : c0 + c] / 255.0
        tl = tl[r0 : r0 + c, c0 : c0 + c]
        if rng.random() < 0.5:
            ti, tl = ti.flip(-1), tl.flip(-1)
        if rng.random() < 0.5:  # brightness / contrast / gamma jitter
            ti = (ti * float(rng.uniform(0.6, 1.3))).clamp(0, 1) ** float(rng.uniform(0.7, 1.4))
        if rng.random() < 0.2:
            ti = ti.mean(0, keepdim=True).expand(3, -1, -1)
        images.append(ti)
        labels.append(tl)
    x = torch.stack(images)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x, torch.stack(labels).long()


def predict_classes(model: TernausNet, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Class index (H, W) uint8 of a uint8 (3, H, W) image at its own resolution."""
    _, h, w = image.shape
    ph, pw = (-h) % 32, (-w) % 32
    x = torch.from_numpy(image).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    x = F.pad(x[None], (0, pw, 0, ph), mode="reflect").to(device)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
    ):
        logits = model(x).float()
    return logits[0, :, :h, :w].argmax(0).to(torch.uint8).cpu().numpy()


def iou_table(
    model: TernausNet, data: list[tuple[str, np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, Any]:
    """Per-class IoU and pixel accuracy over a split (ignored pixels left out)."""
    model.eval()
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    correct = total = 0
    for _, img, lab in data:
        pred = predict_classes(model, img, device)
        valid = lab != IGNORE
        for k in range(len(CLASSES)):
            p, g = (pred == k) & valid, (lab == k) & valid
            inter[k] += (p & g).sum()
            union[k] += (p | g).sum()
        correct += int(((pred == lab) & valid).sum())
        total += int(valid.sum())
    iou = inter / np.maximum(union, 1)
    return {
        "iou": {c: float(v) for c, v in zip(CLASSES, iou, strict=True)},
        "miou": float(iou.mean()),
        "pixel_accuracy": correct / max(1, total),
    }


def train_semantics(cfg: SemanticsConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, select on validation mIoU, write ``model.safetensors`` + card into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    train_data = load_labelled_facades(cfg.data, "train")
    val_data = load_labelled_facades(cfg.data, "val")
    model = TernausNet(cfg.architecture, width=cfg.width, norm="batch", classes=len(CLASSES))
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    t_start = time.monotonic()

    def fraction(step: int) -> float:
        if cfg.time_budget_s > 0:
            return min(1.0, (time.monotonic() - t_start) / cfg.time_budget_s)
        return min(1.0, step / cfg.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * fraction(step)))
    )
    # class frequencies -> weights (openings and background are rarer than wall)
    counts = np.bincount(
        np.concatenate([lab[lab != IGNORE].ravel() for _, _, lab in train_data]),
        minlength=len(CLASSES),
    )
    weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
    weight = (weight / weight.mean()).to(device)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"miou": -1.0, "step": 0}
    step = 0
    while fraction(step) < 1.0:
        model.train()
        x, y = _crop_batch(train_data, cfg, rng)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=weight, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % cfg.val_every == 0 or fraction(step) >= 1.0:
            val = iou_table(model, val_data, device)
            history.append(
                {
                    "step": step,
                    "loss": float(loss.detach()),
                    "elapsed_s": round(time.monotonic() - t_start, 1),
                    **val,
                }
            )
            log.info("semantics step %d: %s", step, json.dumps(history[-1]))
            if val["miou"] > best["miou"]:
                best = {"miou": val["miou"], "step": step, "val": val}
                _save(model, cfg, run_dir / "model", {"validation": val, "step": step})
            (run_dir / "history.json").write_text(
                json.dumps({"history": history, "best": best}, indent=1)
            )
    return {"run_dir": str(run_dir), "steps": step, "best": best}


def _save(
    model: TernausNet, cfg: SemanticsConfig, path: Path, metrics: dict[str, Any]
) -> ModelCard:
    card = ModelCard(
        model_id=cfg.name,
        architecture=cfg.architecture,
        width=cfg.width,
        body_head=False,
        norm="batch",
        clip_px=0.0,
        threshold_px=0.0,
        output="class logits: wall, opening, background (argmax)",
        classes=CLASSES,
        recipe=json.loads(json.dumps(dataclasses.asdict(cfg))),
        training_data=[{"name": "labelmefacade", "split": "train (validation sets held out)"}],
        licence=cfg.licence_note,
        metrics=metrics,
        notes={"input_scale": "whole façade at about 25-40 mm per pixel (a storey ~100 px)"},
    )
    import copy

    return save_model(copy.deepcopy(model).float().cpu().eval(), card, path)
