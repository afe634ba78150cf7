"""Training recipes: the :class:`TrainConfig` read from ``configs/train/*.yaml`` (unknown keys
are errors; a recipe may derive from another with ``base:``), and the crop sources it names."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from ..errors import ConfigError
from .data import Augment, CropSource, Sample, load_samples
from .losses import LossWeights
from .negatives import (
    NegativeImage,
    NegativeSource,
    SyntheticSource,
    brick_negative,
    load_negatives,
    load_stamps,
)
from .topo import TopoParams


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # folder under data.root (or an absolute path)
    weight: float = 1.0
    split: str = "train"


@dataclass(frozen=True)
class NegativeSpec:
    """An intact-façade set used as negatives (``brick`` is scikit-image's brick photo).

    ``scales``: integer downscale factors the set is used at; ``hot_spots``: an .npz (under
    data_root) of mined false-positive positions keyed ``"<stem>@<factor>"``; ``hot_share``: the
    share of crops centred near one of them.
    """

    name: str
    weight: float = 0.1
    scales: tuple[int, ...] = (1,)
    hot_spots: str = ""
    hot_share: float = 0.5


@dataclass(frozen=True)
class SyntheticSpec:
    """Synthetic cracks: real crack-map stamps darkened into crops of the named negative sets."""

    weight: float = 0.0
    stamps: str = ""  # .npz of stamps under data_root (made by workflows/retrain.py pack)
    backgrounds: tuple[NegativeSpec, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe (configs/train/*.yaml). Unknown keys are errors."""

    name: str = "mse+dice+topo"
    seed: int = 27
    architecture: Literal["unet16", "unet11"] = "unet16"
    width: float = 0.25
    body_head: bool = True
    norm: Literal["none", "batch"] = "batch"  # BatchNorm after each conv: from-scratch training
    data_root: str = "../shared/data"
    train: tuple[DatasetSpec, ...] = (DatasetSpec("masonry_dais2021"),)
    val: tuple[DatasetSpec, ...] = (DatasetSpec("masonry_dais2021", split="val"),)
    crop_px: int = 256
    crops_per_epoch: int = 512
    batch_size: int = 16
    epochs: int = 50
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    clip_px: float = 20.0
    augment: Augment = field(default_factory=Augment)
    loss: LossWeights = field(default_factory=LossWeights)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    threads: int = 0  # 0 = all cores
    slack_px: float = 5.0
    selection_metric: Literal["quality", "f1", "quality_fp"] = "quality"
    imagenet_init: bool = False
    licence_note: str = ""
    # intact façades as negatives, and synthetic cracks on them
    negatives: tuple[NegativeSpec, ...] = ()
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    # negatives scored every epoch: false crack length per megapixel at the selected threshold
    val_negatives: tuple[NegativeSpec, ...] = ()
    # selection score "quality_fp" = quality - fp_penalty * (false px per MP / 1000)
    fp_penalty: float = 0.1
    # > 0: a false-crack budget (px of centreline per MP of validation negative). Thresholds over
    # it score below every threshold within it (the lowest false crack wins when none is within):
    # the operating point is the best one that meets the budget
    fp_budget_px_per_mp: float = 0.0
    # start from these weights ("shipped" = the packaged default model) instead of He init
    init_weights: str = ""
    # > 0: the learning-rate schedule follows wall time and training stops after this many
    # seconds (a fixed-budget run on a borrowed machine; not reproducible step for step)
    time_budget_s: float = 0.0
    # > 0: validate, select and save an exponential moving average of the weights (and the
    # BatchNorm statistics) with this decay per step, not the raw weights: the average of the
    # last ~1/(1-decay) steps is steadier from one validation to the next
    ema_decay: float = 0.0


def _strict(cls: type, d: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
    return d


def config_from_dict(d: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain dict (as read from YAML)."""
    d = dict(_strict(TrainConfig, d, where))
    for key in ("train", "val"):
        if key in d:
            d[key] = tuple(
                DatasetSpec(**_strict(DatasetSpec, s, f"{where}: {key}"))
                if isinstance(s, dict)
                else DatasetSpec(str(s), split="train" if key == "train" else "val")
                for s in d[key]
            )
    for key in ("negatives", "val_negatives"):
        if key in d:
            d[key] = tuple(_negative_spec(x, f"{where}: {key}") for x in d[key])
    if "synthetic" in d:
        syn = dict(_strict(SyntheticSpec, d["synthetic"], f"{where}: synthetic"))
        syn["backgrounds"] = tuple(
            _negative_spec(x, f"{where}: synthetic.backgrounds") for x in syn.get("backgrounds", ())
        )
        d["synthetic"] = SyntheticSpec(**syn)
    if "augment" in d:
        d["augment"] = Augment(**_strict(Augment, d["augment"], f"{where}: augment"))
    if "loss" in d:
        loss = dict(_strict(LossWeights, d["loss"], f"{where}: loss"))
        if "topo_params" in loss:
            loss["topo_params"] = TopoParams(
                **_strict(TopoParams, loss["topo_params"], f"{where}: loss.topo_params")
            )
        d["loss"] = LossWeights(**loss)
    try:
        return TrainConfig(**d)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _negative_spec(x: Any, where: str) -> NegativeSpec:
    if isinstance(x, NegativeSpec):
        return x
    if isinstance(x, str):
        return NegativeSpec(x)
    x = dict(_strict(NegativeSpec, x, where))
    if "scales" in x:
        x["scales"] = tuple(int(v) for v in x["scales"])
    return NegativeSpec(**x)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a recipe YAML; ``overrides`` (e.g. from the CLI) take precedence."""
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    base = d.pop("base", None)
    if base is not None:
        # a recipe may derive from another one: its keys replace the base's, key by key
        # (nested mappings such as `loss` are merged one level deep)
        merged = config_to_dict(load_config(path.parent / base))
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        d = merged
    d.update(overrides or {})
    return config_from_dict(d, str(path))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def resolve_data_path(root: str, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else Path(root) / name


def negative_images(cfg: TrainConfig, spec: NegativeSpec, split: str) -> list[NegativeImage]:
    if spec.name == "brick":
        return [brick_negative()] if split == "train" else []
    hot: dict[str, np.ndarray] | None = None
    if spec.hot_spots and split == "train":
        with np.load(resolve_data_path(cfg.data_root, spec.hot_spots)) as z:
            hot = {k: z[k] for k in z.files}
    return load_negatives(
        resolve_data_path(cfg.data_root, spec.name), split, scales=spec.scales, hot_spots=hot
    )


def build_sources(cfg: TrainConfig) -> tuple[list[CropSource | list[Sample]], list[float]]:
    """The training crop sources of a recipe and their mixing weights."""
    sources: list[CropSource | list[Sample]] = [
        load_samples(resolve_data_path(cfg.data_root, s.name), s.split, clip_px=cfg.clip_px)
        for s in cfg.train
    ]
    weights = [s.weight for s in cfg.train]
    for n in cfg.negatives:
        sources.append(
            NegativeSource(
                negative_images(cfg, n, "train"), clip_px=cfg.clip_px, hot_share=n.hot_share
            )
        )
        weights.append(n.weight)
    syn = cfg.synthetic
    if syn.weight > 0:
        backgrounds = [x for b in syn.backgrounds for x in negative_images(cfg, b, "train")]
        stamps = load_stamps(resolve_data_path(cfg.data_root, syn.stamps))
        sources.append(SyntheticSource(backgrounds, stamps, clip_px=cfg.clip_px))
        weights.append(syn.weight)
    return sources, weights
