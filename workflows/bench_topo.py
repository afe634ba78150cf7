"""Benchmark the TOPO loss (not a test): time per batch of 16 x 256 x 256, weights included.

    python workflows/bench_topo.py [--repeats 10] [--json]

Prints, in one run so the ratios are fair on a shared machine:
- the batched compiled kernel (all windows in one numba call, both passes), 1 and 2 threads;
- the authors' structure for comparison: a Python loop over the 32x32 windows calling a compiled
  pair counter per window and pass (our own `pair_counts`, so only the loop structure differs);
- a check that both give identical weights;
- the TOPO share of a training step of the default recipe's model (forward + loss + backward +
  Adam on the same batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cracksurvey.model import TernausNet
from cracksurvey.train.losses import LossWeights, combined_loss
from cracksurvey.train.recipe import load_config
from cracksurvey.train.targets import distance_target
from cracksurvey.train.topo import (
    TopoParams,
    _window_edges,
    _window_labels,
    pair_counts,
    set_threads,
    topo_loss,
    topo_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def make_batch(n: int = 16, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crack-like targets (random polylines) and noisy predictions with ReLU zeros and gaps."""
    rng = np.random.default_rng(seed)
    ys, ps = [], []
    for _ in range(n):
        sk = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            r, c = rng.uniform(0, size, 2)
            ang = rng.uniform(0, np.pi)
            for t in range(-size, size):
                rr, cc = int(r + t * np.sin(ang)), int(c + t * np.cos(ang))
                if 0 <= rr < size and 0 <= cc < size:
                    sk[rr, cc] = True
        y = distance_target(sk)
        pred = y + rng.normal(0, 2, y.shape)
        pred[rng.random(y.shape) < 0.05] = 0.0
        gap = rng.integers(0, size - 40, 2)
        pred[gap[0] : gap[0] + 30, gap[1] : gap[1] + 30] += 8
        ys.append(y)
        ps.append(np.clip(pred, 0, None).astype(np.float32))
    return np.stack(ps), np.stack(ys)


def per_window_loop(pred: np.ndarray, target: np.ndarray, params: TopoParams) -> tuple[np.ndarray, np.ndarray]:
    """The authors' structure: Python loops over images and windows, one compiled call per window
    and pass, normalisers from the counts."""
    ws = params.window_px
    u, v = _window_edges(ws)
    pin = params.clip_px if params.faithful else np.inf
    w_neg = np.zeros_like(pred)
    w_pos = np.zeros_like(pred)
    for b in range(pred.shape[0]):
        for r0 in range(0, pred.shape[1] - ws + 1, ws):
            for c0 in range(0, pred.shape[2] - ws + 1, ws):
                yw = np.ascontiguousarray(target[b, r0 : r0 + ws, c0 : c0 + ws])
                pw = pred[b, r0 : r0 + ws, c0 : c0 + ws].ravel()
                labels, k = _window_labels(yw, params.band_iterations)
                if k == 0:
                    continue
                a = (pw[u] + pw[v]).astype(np.float32)
                g = (yw.ravel()[u] + yw.ravel()[v]).astype(np.float32)
                for positive, out in ((False, w_neg), (True, w_pos)):
                    aff = np.where(g < params.core, np.float32(0), a) if positive else np.where(g > params.near, np.float32(pin), a)
                    c = pair_counts(aff, labels, k, u, v, positive)
                    total = c.sum()
                    if total == 0:
                        continue
                    c = np.where((g > params.near) if positive else (g < params.near), c / total, 0.0).astype(np.float32)
                    node = np.zeros(ws * ws, np.float32)
                    np.add.at(node, u, c)
                    np.add.at(node, v, c)
                    out[b, r0 : r0 + ws, c0 : c0 + ws] += node.reshape(ws, ws)
    return w_neg, w_pos


def timed(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pred, target = make_batch()
    params = TopoParams()
    out: dict[str, float | str | bool] = {"batch": "16 x 256 x 256", "windows": 16 * 64}

    set_threads(2)
    out["kernel_2_threads_ms"] = 1e3 * timed(lambda: topo_weights(pred, target, params), args.repeats)
    set_threads(1)
    out["kernel_1_thread_ms"] = 1e3 * timed(lambda: topo_weights(pred, target, params), args.repeats)
    set_threads(2)
    out["per_window_loop_ms"] = 1e3 * timed(lambda: per_window_loop(pred, target, params), max(1, args.repeats // 5))
    a = topo_weights(pred, target, params)
    b = per_window_loop(pred, target, params)
    # same pair counts; node sums may differ in the last float32 bit (addition order)
    out["max_abs_weight_difference"] = float(max(np.abs(a[0] - b[0]).max(), np.abs(a[1] - b[1]).max()))
    out["max_weight"] = float(max(a[0].max(), a[1].max()))

    pt = torch.from_numpy(pred)[:, None].requires_grad_()
    tt = torch.from_numpy(target)[:, None]
    out["topo_loss_forward_ms"] = 1e3 * timed(lambda: topo_loss(pt, tt, params), args.repeats)

    cfg = load_config(ROOT / "configs/train/mse+dice+topo.yaml")
    torch.set_num_threads(2)
    model = TernausNet(cfg.architecture, width=cfg.width, body_head=cfg.body_head).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(16, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    body = (tt <= 2).float()

    def step(weights: LossWeights) -> None:
        opt.zero_grad()
        loss, _ = combined_loss(model(x).float(), tt, body, weights)
        loss.backward()
        opt.step()

    out["train_step_ms"] = 1e3 * timed(lambda: step(cfg.loss), max(1, args.repeats // 5))
    out["topo_share_of_step_pct"] = 100 * out["topo_loss_forward_ms"] / out["train_step_ms"]  # type: ignore[operator]
    out["model"] = f"{cfg.architecture} width {cfg.width} (default recipe)"
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v:.1f}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
