"""The training loop: Adam, validation every epoch, selection on a validation metric, resume.

A run directory holds ``config.yaml`` (effective), ``checkpoint.pt`` (last epoch: model, optimiser,
history; loaded with ``weights_only=True``), ``best.safetensors`` + card (best epoch by the
selection metric — docs/method.md, D11: not the loss), ``history.json``, ``history.png`` and, after calibration,
``model.safetensors`` + ``model.json`` (the card ``process`` reads).

Exact resume: each epoch's crops and augmentations come from a generator seeded by
``(seed, epoch)``, so ``--resume`` after an interruption replays the same batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import ConfigError
from ..evaluation.metrics import aggregate, relaxed_counts
from ..model import ModelCard, TernausNet, save_model
from ..predict import auto_precision, keep_freed_memory
from ..skeleton import skeletonize_mask
from .data import MixedCrops, Sample, load_samples, pad_to_multiple
from .losses import combined_loss
from .negatives import NegativeImage
from .recipe import (
    TrainConfig,
    build_sources,
    config_to_dict,
    negative_images,
    resolve_data_path,
)
from .topo import set_threads

log = logging.getLogger(__name__)

SWEEP_COARSE = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)  # low ones for a false-crack budget
# Fine sweep for the final threshold: the TOPO-trained models calibrate below 0.5 px (the
# distance map is near 0 only on the centreline), so the sweep starts at 0.05 px.
CALIBRATION_SWEEP = (0.05, 0.1, 0.15, 0.2) + tuple(float(t) for t in np.arange(0.25, 12.01, 0.25))


def choose_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a recipe runs under bf16 autocast on ``device`` (auto: CUDA, or a CPU whose
    ``precision: auto`` is bf16; bf16 autocast needs no loss scaling)."""
    if device.type == "cuda":
        return cfg.precision in ("auto", "bf16")
    return cfg.precision == "bf16" or (cfg.precision == "auto" and auto_precision("cpu") == "bf16")


def validation_data(cfg: TrainConfig) -> tuple[list[Sample], list[NegativeImage]]:
    """The recipe's validation images (with targets) and validation negatives."""
    samples = [
        x
        for s in cfg.val
        for x in load_samples(
            resolve_data_path(cfg.data_root, s.name), s.split, clip_px=cfg.clip_px
        )
    ]
    negatives = [x for n in cfg.val_negatives for x in negative_images(cfg, n, "val")]
    return samples, negatives


def predict_distance(
    model: TernausNet,
    image: np.ndarray,
    mean: tuple,
    std: tuple,
    *,
    device: torch.device,
    bf16: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distance (and body probability) for one uint8 (3, H, W) image, padded to a multiple of 32."""
    padded, (h, w) = pad_to_multiple(image, 32)
    x = torch.from_numpy(padded.astype(np.float32) / 255.0)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    x = x[None].to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x).float()
    dist = out[0, 0, :h, :w].cpu().numpy()
    body = torch.sigmoid(out[0, 1, :h, :w]).cpu().numpy() if out.shape[1] > 1 else None
    return dist, body


def validate(
    model: TernausNet,
    samples: list[Sample],
    *,
    cfg: TrainConfig,
    device: torch.device,
    bf16: bool,
    thresholds: tuple[float, ...] = SWEEP_COARSE,
    negatives: list[NegativeImage] | None = None,
) -> dict[str, Any]:
    """Micro quality/F1 at each threshold; the best threshold by the selection metric.

    With ``negatives`` (intact images), also the false crack length at each threshold: skeleton
    pixels of the predicted mask per megapixel of negative image (``fp_px_per_mp``).
    """
    model.eval()
    counts: dict[float, list] = {t: [] for t in thresholds}
    mse = 0.0
    for s in samples:
        dist, _ = predict_distance(
            model, s.image, cfg_mean(cfg), cfg_std(cfg), device=device, bf16=bf16
        )
        mse += float(((np.minimum(dist, cfg.clip_px) - s.distance) ** 2).mean())
        for t in thresholds:
            counts[t].append(relaxed_counts(dist <= t, s.body, slack_px=cfg.slack_px))
    per_t = {t: aggregate(c)["micro"] for t, c in counts.items()}
    if negatives:
        fp_px = dict.fromkeys(thresholds, 0.0)
        pixels = 0
        for neg in negatives:
            dist, _ = predict_distance(
                model, neg.image, cfg_mean(cfg), cfg_std(cfg), device=device, bf16=bf16
            )
            pixels += dist.size
            for t in thresholds:
                fp_px[t] += float(skeletonize_mask(dist <= t).sum())
        for t in thresholds:
            per_t[t] = {**per_t[t], "fp_px_per_mp": fp_px[t] / pixels * 1e6}
    best_t = max(thresholds, key=lambda t: threshold_score(per_t[t], cfg))
    out = {
        "threshold_px": best_t,
        cfg.selection_metric: threshold_score(per_t[best_t], cfg),
        "f1": per_t[best_t]["f1"] or 0.0,
        "quality": per_t[best_t]["quality"] or 0.0,
        "correctness": per_t[best_t]["correctness"] or 0.0,
        "completeness": per_t[best_t]["completeness"] or 0.0,
        "val_mse": mse / max(1, len(samples)),
        "sweep": {str(t): per_t[t] for t in thresholds},
    }
    if negatives:
        out["fp_px_per_mp"] = per_t[best_t]["fp_px_per_mp"]
    return out


def threshold_score(metrics: dict[str, Any], cfg: TrainConfig) -> float:
    """The selection score of one threshold's validation metrics (higher is better).

    ``quality_fp`` = quality - ``fp_penalty`` x false px per MP / 1000; other metrics as they are.
    With a false-crack budget (``fp_budget_px_per_mp`` > 0), a threshold over it scores below
    -1, under every threshold within it, and the lower its false crack the higher.
    """
    fp = float(metrics.get("fp_px_per_mp", 0.0))
    if cfg.fp_budget_px_per_mp > 0 and fp > cfg.fp_budget_px_per_mp:
        return -1.0 - fp / 1e6
    if cfg.selection_metric == "quality_fp":
        q = metrics["quality"]
        return -1.0 if q is None else float(q) - cfg.fp_penalty * fp / 1000.0
    v = metrics[cfg.selection_metric]
    return -1.0 if v is None else float(v)


def cfg_mean(cfg: TrainConfig) -> tuple[float, float, float]:
    return (0.485, 0.456, 0.406)


def cfg_std(cfg: TrainConfig) -> tuple[float, float, float]:
    return (0.229, 0.224, 0.225)


def _card(
    cfg: TrainConfig,
    model_id: str,
    threshold: float,
    metrics: dict[str, Any],
    notes: dict[str, Any],
) -> ModelCard:
    return ModelCard(
        model_id=model_id,
        architecture=cfg.architecture,
        width=cfg.width,
        body_head=cfg.body_head,
        norm=cfg.norm,
        clip_px=cfg.clip_px,
        threshold_px=float(threshold),
        recipe=config_to_dict(cfg),
        training_data=[dataclasses.asdict(s) for s in cfg.train],
        licence=cfg.licence_note,
        metrics=metrics,
        notes=notes,
    )


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({k for h in history for k in h.get("train", {})}):
        axes[0].plot(epochs, [h["train"].get(key, math.nan) for h in history], label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss terms (mean per step)")
    axes[0].legend()
    for key in ("quality", "f1", "correctness", "completeness"):
        axes[1].plot(epochs, [h["val"].get(key, math.nan) for h in history], label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation (micro, slack 5 px, best τ)")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


ProgressFactory = Callable[[int, str], Any]


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    stop_after_epochs: int | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Train (or resume) a model; returns the final summary.

    ``stop_after_epochs`` stops the loop early (as an interruption would), leaving a resumable
    checkpoint. ``progress(total_steps, description)`` returns a tqdm-like object (the CLI owns it).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    set_threads(threads)
    keep_freed_memory()  # activations reused, not page-faulted in every step
    device = choose_device()
    bf16 = uses_bf16(cfg, device)
    torch.manual_seed(cfg.seed)

    sources, weights = build_sources(cfg)
    val_samples, val_negatives = validation_data(cfg)
    crops = MixedCrops(sources, weights, crop_px=cfg.crop_px, aug=cfg.augment)

    model = TernausNet(cfg.architecture, width=cfg.width, body_head=cfg.body_head, norm=cfg.norm)
    with torch.no_grad():
        # start the distance head mid-range: with a final ReLU and a small random bias, a
        # from-scratch network can begin with most outputs stuck at 0 (no gradient)
        assert model.final.bias is not None
        model.final.bias.fill_(cfg.clip_px / 2)
    if cfg.init_weights:
        init_from_weights(model, cfg.init_weights)
    if cfg.imagenet_init:
        from ..model import load_imagenet_encoder

        load_imagenet_encoder(model)
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay {cfg.ema_decay}: must be in [0, 1) (0 = no averaging)")
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
            use_buffers=True,
        )
        if cfg.ema_decay > 0
        else None
    )
    steps_per_epoch = max(1, cfg.crops_per_epoch // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    t_start = time.monotonic()

    def progress_fraction(step: int) -> float:
        if cfg.time_budget_s > 0:
            return min(1.0, (time.monotonic() - t_start) / cfg.time_budget_s)
        return min(step, total_steps) / total_steps

    if cfg.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * progress_fraction(step)))
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": -1}
    start_epoch = 0
    if resume:
        if not ckpt_path.exists():
            raise ConfigError(f"{ckpt_path}: nothing to resume; run without --resume")
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if ema is not None:
            if "ema" not in state:
                raise ConfigError(
                    f"{ckpt_path}: saved without ema_decay; resume with the same recipe"
                )
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        best = json.loads(state["best"])
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)

    def out_of_time() -> bool:
        return cfg.time_budget_s > 0 and time.monotonic() - t_start >= cfg.time_budget_s

    for epoch in range(start_epoch, last_epoch):
        if out_of_time():
            break
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums: dict[str, float] = {}
        steps_done = 0
        t0 = time.perf_counter()
        bar = progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}") if progress else None
        for _ in range(steps_per_epoch):
            images, dist, body = crops.batch(cfg.batch_size, rng)
            x = torch.from_numpy(images)
            x = (x - torch.tensor(cfg_mean(cfg))[:, None, None]) / torch.tensor(cfg_std(cfg))[
                :, None, None
            ]
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(dist).to(device)
            b = torch.from_numpy(body).to(device)
            optimizer.zero_grad(set_to_none=True)
            ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
            with ctx:
                out = model(x)
            loss, terms = combined_loss(out.float(), y, b, cfg.loss)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            terms["total"] = float(loss.detach())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            steps_done += 1
            if bar is not None:
                bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()}, refresh=False)
                bar.update(1)
            if out_of_time():
                break
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        # the model that is validated and saved: the average when there is one
        scored: TernausNet = model if ema is None else ema.module  # type: ignore[assignment]
        val = validate(
            scored, val_samples, cfg=cfg, device=device, bf16=bf16, negatives=val_negatives
        )
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train": {k: v / max(1, steps_done) for k, v in sums.items()},
            "steps": steps_done,
            "val": {k: v for k, v in val.items() if k != "sweep"},
            "lr": scheduler.get_last_lr()[0],
            "train_s": round(train_time, 2),
            "val_s": round(time.perf_counter() - t0 - train_time, 2),
        }
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        score = float(val[cfg.selection_metric])
        if best["epoch"] < 0 or score > best["score"]:  # the first epoch always, even over budget
            best = {
                "score": score,
                "epoch": epoch + 1,
                "threshold_px": val["threshold_px"],
                "val": entry["val"],
            }
            save_model(
                scored,
                _card(
                    cfg, f"{cfg.name}-best", val["threshold_px"], entry["val"], {"epoch": epoch + 1}
                ),
                run_dir / "best",
            )
        torch.save(
            {
                "model": model.state_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "history": json.dumps(history),
                "best": json.dumps(best),
            },
            run_dir / "checkpoint.pt.tmp",
        )
        (run_dir / "checkpoint.pt.tmp").replace(ckpt_path)
        (run_dir / "history.json").write_text(
            json.dumps({"history": history, "best": best}, indent=1)
        )
        _plot_history(history, run_dir / "history.png")

    done = len(history) >= cfg.epochs or out_of_time()
    summary = {"run_dir": str(run_dir), "epochs_done": len(history), "finished": done, "best": best}
    if done and not (run_dir / "model.safetensors").exists():
        summary["calibration"] = calibrate(
            cfg, run_dir, val_samples, device=device, bf16=bf16, negatives=val_negatives
        )
    return summary


def init_from_weights(model: TernausNet, weights: str) -> None:
    """Copy a trained model's parameters into ``model`` (same architecture, width and heads)."""
    from ..model import load_model

    path = None if weights == "shipped" else weights
    trained, card = load_model(path, fold_bn=False)
    try:
        model.load_state_dict(trained.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"init_weights {weights}: {card.model_id} ({card.architecture}, width {card.width}) does not "
            f"match the recipe's architecture ({model.architecture}, width {model.width}): {str(exc).splitlines()[0]}"
        ) from exc


def calibrate(
    cfg: TrainConfig,
    run_dir: Path,
    val_samples: list[Sample],
    *,
    device: torch.device,
    bf16: bool,
    negatives: list[NegativeImage] | None = None,
) -> dict[str, Any]:
    """Fine threshold sweep on validation with the best checkpoint; writes model.safetensors + card."""
    from ..model import load_model

    model, card = load_model(run_dir / "best.safetensors", device=device, fold_bn=False)
    sweep = CALIBRATION_SWEEP
    val = validate(
        model, val_samples, cfg=cfg, device=device, bf16=bf16, thresholds=sweep, negatives=negatives
    )
    metrics = {
        "validation": {k: v for k, v in val.items() if k != "sweep"},
        "validation_sweep": val["sweep"],
        "selection": f"micro {cfg.selection_metric} (Wiedemann), slack {cfg.slack_px} px, on "
        + ", ".join(f"{s.name}/{s.split}" for s in cfg.val),
    }
    notes = dict(card.notes)
    final = dataclasses.replace(
        card, model_id=cfg.name, threshold_px=val["threshold_px"], metrics=metrics, notes=notes
    )
    model_cpu = model.float().cpu()
    final = save_model(model_cpu, final, run_dir / "model")
    return {
        "threshold_px": final.threshold_px,
        cfg.selection_metric: val[cfg.selection_metric],
        "sha256": final.sha256,
    }
