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
from train_verifier import _auc, fit, group_scores, rule_threshold  # noqa: E402

from cracksurvey.verify import CrackVerifier, VerifierCard, score_patches  # noqa: E402

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


def run(tr: dict, va: dict, context: bool, seed: int, steps: int = 2000) -> dict:
    t0 = time.time()
    net = fit(lambda: Net(context), tr, steps=steps, seed=seed, log=False)
    scores = score_patches(net, VerifierCard(model_id="context experiment"), va["X"])  # type: ignore[arg-type]
    comp, label, kind = group_scores(scores, va["y"], va["g"], va["kind"])
    threshold = rule_threshold(comp, label, kind, keep=0.95)
    facade = kind == 1
    return {
        "context": context,
        "seed": seed,
        "s": round(time.time() - t0),
        "min_score": round(threshold, 3),
        "facade_false_kept": round(float((comp[facade & (label == 0)] >= threshold).mean()), 3),
        "crackset_far_kept": round(
            float((comp[(kind == 0) & (label == 0)] >= threshold).mean()), 3
        ),
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
