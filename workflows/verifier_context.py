"""Crack-verifier experiment: the shipped 64-px patch against the same patch plus 128 px of
context averaged down to 64 px (six input channels), on the same data, seeds, steps and
threshold rule (docs/training.md, "The crack verifier"; a negative result: not shipped).

    python workflows/train_verifier.py mine --data runs/data --crack-data ../shared/data \
        --split val --patch 128 --out runs/verifier/val_all128.npz
    python workflows/train_verifier.py mine --data runs/data --split train --patch 128 \
        --out runs/verifier/train128.npz
    python workflows/verifier_context.py 0,1,2 0,1   # seeds; 0 = centre only, 1 = with context

Prints one JSON line per run: the threshold by the rule (keep 95 % of the validation cracks of
each kind of photo), the share of the held-out façades' false cracks kept, the share of the
crack datasets' components far from the ground truth kept, and the façade component AUC.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_verifier import _auc, group_scores  # noqa: E402

from cracksurvey.verify import IMAGENET_MEAN, IMAGENET_STD, CrackVerifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    """The shipped verifier network on the 64-px centre of a 128-px patch, with or without the
    whole patch averaged down to 64 px as three more input channels."""

    def __init__(self, context: bool, width: int = 16) -> None:
        super().__init__()
        self.context = context
        self.net = CrackVerifier(width)
        if context:
            self.net.features[0][0] = nn.Conv2d(6, width, 3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[..., 32:96, 32:96]
        if self.context:
            c = torch.cat([c, F.avg_pool2d(x, 2)], 1)
        out: torch.Tensor = self.net(c)
        return out


MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None] * 255.0
STD = torch.tensor(IMAGENET_STD)[:, None, None] * 255.0


def scores_of(net: nn.Module, x_all: np.ndarray) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_all), 256):
            x = (torch.from_numpy(x_all[i : i + 256]).float() - MEAN) / STD
            out.append(torch.sigmoid(net(x)).double().numpy())
    return np.concatenate(out)


def rule(comp: np.ndarray, label: np.ndarray, kind: np.ndarray, keep: float = 0.95) -> float:
    """The highest threshold keeping ``keep`` of the validation cracks of each kind of photo."""
    limits = []
    for kd in (0, 1):
        cracks = np.sort(comp[(label == 1) & (kind == kd)])
        limits.append(float(cracks[int(np.floor((1 - keep) * cracks.size))]))
    return min(limits)


def run(tr: dict, va: dict, context: bool, seed: int, steps: int = 2000) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    x_train, y_train = torch.from_numpy(tr["X"]), torch.from_numpy(tr["y"]).float()
    pools = [np.nonzero((tr["y"] == lb) & (tr["kind"] == kd))[0] for lb in (1, 0) for kd in (0, 1)]
    net = Net(context)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.time()
    for _ in range(steps):  # the sampling and augmentation of train_verifier.py
        idx = np.concatenate([rng.choice(p, 16) for p in pools])
        x = x_train[idx]
        if rng.random() < 0.5:
            x = x.flip(3)
        if rng.random() < 0.5:
            x = x.flip(2)
        x = torch.rot90(x, int(rng.integers(4)), (2, 3))
        loss = F.binary_cross_entropy_with_logits(net((x.float() - MEAN) / STD), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    comp, label, kind = group_scores(scores_of(net, va["X"]), va["y"], va["g"], va["kind"])
    threshold = rule(comp, label, kind)
    facade = kind == 1
    return {
        "context": context,
        "seed": seed,
        "s": round(time.time() - t0),
        "min_score": round(threshold, 3),
        "facade_false_kept": round(float((comp[facade & (label == 0)] >= threshold).mean()), 3),
        "crackset_far_kept": round(float((comp[(kind == 0) & (label == 0)] >= threshold).mean()), 3),
        "facade_auc": round(_auc(comp[facade], label[facade]), 3),
    }


def main() -> int:
    loaded = [np.load(ROOT / "runs/verifier" / f) for f in ("train128.npz", "val_all128.npz")]
    tr, va = ({k: d[k] for k in d.files} for d in loaded)
    seeds = [int(x) for x in sys.argv[1].split(",")]
    modes = [bool(int(x)) for x in sys.argv[2].split(",")]
    for seed in seeds:
        for context in modes:
            print(json.dumps(run(tr, va, context, seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
