"""Crack verifier: a small second network that looks at each crack of the crack layer once more.

The crack model decides pixel by pixel whether a pixel lies near a crack's centreline. On intact
façades its remaining mistakes are whole "cracks" along thin dark edges: window and shutter
frames left outside the openings mask, joints, cables, the edge of a render patch. The verifier
is trained on exactly those mistakes. For each crack it takes patches of ``patch_px`` x
``patch_px`` image pixels (native resolution, RGB) centred on up to ``points_per_crack`` points
spread along the crack, scores each (the probability that a real crack passes through the
centre) and gives the crack the mean: ``verifier_score``. Cracks under ``min_score`` are
dropped from the crack layer, as cracks on openings are.

Training data (``workflows/train_verifier.py``): the crack layer of the shipped crack model on
the training images of the crack datasets (components on the ground truth: cracks; components
far from it: not cracks), on the training intact façades (every component: not a crack), and on
synthetic cracks darkened into intact façade crops (components on the synthetic crack: cracks),
so that both labels occur on both kinds of photo and the network cannot tell them apart by the
kind of photo alone.

Pure functions and a torch module; :func:`verify_cracks` is what ``process`` calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from .errors import ModelError

__all__ = [
    "CrackVerifier",
    "VerifierCard",
    "crack_points",
    "load_verifier",
    "read_patches",
    "save_verifier",
    "score_cracks",
    "score_patches",
    "verify_cracks",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_ID = "cracksurvey-crack-verifier"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CrackVerifier(nn.Module):
    """Patch classifier: (n, 3, p, p) normalised RGB -> (n,) logit of "a crack passes the centre".

    Five 3x3 conv blocks (the first with stride 2), two max pools, global average pooling and
    a linear layer; about 29 MFLOP and 80 k parameters for a 64-px patch.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, stride=2),
            _block(w, 2 * w),
            nn.MaxPool2d(2),
            _block(2 * w, 2 * w),
            _block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x)).squeeze(1)
        return out


@dataclass(frozen=True)
class VerifierCard:
    """What a verifier's weights are and how to use them (the ``.json`` beside them)."""

    model_id: str
    width: int = 16
    patch_px: int = 64
    points_per_crack: int = 6
    min_score: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sha256: str = ""
    crack_model: str = ""
    crack_model_sha256: str = ""  # the crack model whose crack layer it was trained on
    training_data: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    licence: str = ""


def save_verifier(net: CrackVerifier, card: VerifierCard, path: str | Path) -> VerifierCard:
    """Write ``<path>.safetensors`` and ``<path>.json``; return the card with its checksum."""
    from safetensors.torch import save_file

    from .model import sha256_file

    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(weights))
    card = dataclasses.replace(card, sha256=sha256_file(weights))
    stem.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(card), indent=2))
    return card


def load_verifier(path: str | Path | None = None) -> tuple[CrackVerifier, VerifierCard]:
    """The verifier at ``path`` (a ``.safetensors`` with its card), or the shipped one.

    Raises
    ------
    ModelError
        No such file, no card, or a checksum that does not match the card.
    """
    from safetensors.torch import load_file

    from .model import sha256_file

    weights = Path(path) if path is not None else WEIGHTS_DIR / f"{SHIPPED_ID}.safetensors"
    card_path = weights.with_suffix(".json")
    if not weights.is_file() or not card_path.is_file():
        raise ModelError(
            f"{weights}: crack verifier weights or card (.json) not found; pass "
            "verify.weights=PATH or set verify.mode: off"
        )
    raw = json.loads(card_path.read_text())
    known = {f.name for f in dataclasses.fields(VerifierCard)}
    fields: dict[str, Any] = {
        k: tuple(v) if k in ("mean", "std") else v for k, v in raw.items() if k in known
    }
    card = VerifierCard(**fields)
    if card.sha256 and sha256_file(weights) != card.sha256:
        raise ModelError(f"{weights}: checksum does not match its card {card_path.name}")
    net = CrackVerifier(card.width)
    net.load_state_dict(load_file(str(weights)))
    net.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return net, card


def crack_points(
    lines: list[NDArray[np.float64]], *, per_crack: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Up to ``per_crack`` points spread evenly along each polyline (pixel ``(row, col)``
    vertices), at the centres of ``per_crack`` equal stretches of its length.

    Returns rows, cols (rounded to pixels) and the index of the crack of each point.
    """
    rows: list[NDArray[np.float64]] = []
    cols: list[NDArray[np.float64]] = []
    index: list[NDArray[np.int64]] = []
    for k, line in enumerate(lines):
        line = np.asarray(line, np.float64).reshape(-1, 2)
        if line.shape[0] == 0:
            continue
        seg = np.hypot(*np.diff(line, axis=0).T) if line.shape[0] > 1 else np.zeros(0)
        along = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(1, min(per_crack, int(along[-1] // 8) + 1))  # no closer than about 8 px
        at = (np.arange(n) + 0.5) / n * along[-1]
        rows.append(np.interp(at, along, line[:, 0]))
        cols.append(np.interp(at, along, line[:, 1]))
        index.append(np.full(n, k, np.int64))
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return (
        np.round(np.concatenate(rows)).astype(np.int64),
        np.round(np.concatenate(cols)).astype(np.int64),
        np.concatenate(index),
    )


def read_patches(
    image: NDArray[np.uint8], rows: NDArray[np.int64], cols: NDArray[np.int64], patch_px: int
) -> NDArray[np.uint8]:
    """(n, 3, p, p) patches of a (3, H, W) uint8 image centred at the points (reflected at the
    image border; the points are clipped into the image)."""
    half = patch_px // 2
    _, h, w = image.shape
    rows = np.clip(rows, 0, h - 1)
    cols = np.clip(cols, 0, w - 1)
    out = np.empty((rows.size, 3, patch_px, patch_px), np.uint8)
    for j, (r, c) in enumerate(zip(rows, cols)):
        r0, c0 = r - half, c - half
        if r0 >= 0 and c0 >= 0 and r0 + patch_px <= h and c0 + patch_px <= w:
            out[j] = image[:, r0 : r0 + patch_px, c0 : c0 + patch_px]
            continue
        rr = _reflect(np.arange(r0, r0 + patch_px), h)
        cc = _reflect(np.arange(c0, c0 + patch_px), w)
        out[j] = image[:, rr[:, None], cc[None, :]]
    return out


def _reflect(idx: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def score_patches(
    net: CrackVerifier, card: VerifierCard, patches: NDArray[np.uint8], *, batch: int = 256
) -> NDArray[np.float64]:
    """Probability per patch that a real crack passes through its centre."""
    if patches.shape[0] == 0:
        return np.zeros(0)
    mean = torch.tensor(card.mean, dtype=torch.float32)[:, None, None] * 255.0
    std = torch.tensor(card.std, dtype=torch.float32)[:, None, None] * 255.0
    out = []
    with torch.inference_mode():
        for i in range(0, patches.shape[0], batch):
            x = (torch.from_numpy(patches[i : i + batch]).float() - mean) / std
            # channels-last: 1.7x faster on CPU; fp32 everywhere, so that a crack near the
            # threshold is kept or dropped the same on every CPU
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(torch.sigmoid(net(x)).double().numpy())
    return np.concatenate(out)


def verify_cracks(
    image: NDArray[np.uint8],
    lines: list[NDArray[np.float64]],
    net: CrackVerifier,
    card: VerifierCard,
) -> NDArray[np.float64]:
    """``verifier_score`` of each crack: the mean patch score at points along it (NaN for a
    crack without vertices)."""
    rows, cols, index = crack_points(lines, per_crack=card.points_per_crack)
    patches = read_patches(image, rows, cols, card.patch_px)
    return score_cracks(net, card, patches, index, len(lines))


def score_cracks(
    net: CrackVerifier,
    card: VerifierCard,
    patches: NDArray[np.uint8],
    index: NDArray[np.int64],
    n_cracks: int,
) -> NDArray[np.float64]:
    """Mean patch score per crack (``index``: the crack of each patch; NaN for a crack without
    patches)."""
    scores = score_patches(net, card, patches)
    total = np.bincount(index, weights=scores, minlength=n_cracks)
    count = np.bincount(index, minlength=n_cracks)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
