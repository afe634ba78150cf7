"""Process configuration: frozen dataclasses, one section per pipeline stage.

The effective config of a run is built from layers, later layers winning key by key::

    defaults (the dataclasses below, documented in configs/process/default.yaml)
      < preset (configs/process/<name>.yaml or any YAML path)
      < survey.yaml (in the survey directory)
      < --config FILE
      < CLI options

Every layer is a nested mapping ``{section: {key: value}}``. Unknown sections or keys are errors
(:class:`~cracksurvey.errors.ConfigError`) naming the file, the key, the allowed keys and the
closest match. This module is pure: reading the YAML files is done by
:func:`cracksurvey.io.survey_files.load_process_config`.

Examples
--------
>>> cfg = build_config([("cli", {"tiling": {"tile_px": 512}})])
>>> cfg.tiling.tile_px, cfg.tiling.halo_px
(512, 96)
>>> build_config([("survey.yaml", {"tiling": {"tile_size": 512}})])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cracksurvey.errors.ConfigError: survey.yaml: unknown key 'tiling.tile_size' (did you mean ...
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import yaml

from cracksurvey.errors import ConfigError, suggest

__all__ = [
    "CppConfig",
    "DamageConfig",
    "Device",
    "EngineConfig",
    "ModelConfig",
    "Precision",
    "ProcessConfig",
    "SurveyConfig",
    "TilingConfig",
    "VectorizeConfig",
    "build_config",
    "parse_set_options",
    "suggest",
]

Precision = Literal["auto", "bf16", "fp32"]
#: What a tile at the image's edge sees beyond it (:class:`TilingConfig`).
Border = Literal["image", "reflect"]
#: ``auto`` picks CUDA, then MPS, then CPU; ``cuda:N`` selects one GPU.
Device = str

MIN_HALO_PX = 64


def _invalid(keys: Sequence[str], message: str) -> ConfigError:
    """A ConfigError remembering which ``section.key`` values caused it (for provenance)."""
    err = ConfigError(message)
    err.keys = tuple(keys)  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class TilingConfig:
    """How an image is cut into tiles for the model.

    Parameters
    ----------
    tile_px : int
        Tile side in pixels, halo included: the side of one forward pass. A throughput knob,
        not a correctness knob (results do not depend on it; docs/performance.md has the
        measurements behind the default).
    halo_px : int
        Overlap on each side of the core window that is predicted but discarded (>= 64, about the
        network's useful receptive field).
    border : {'image', 'reflect'}
        At the image's edges: ``image`` (default) gives a tile only the image's own pixels as
        context (its window is cut at the edge and grown inward); ``reflect`` adds the halo
        beyond the edge as a mirror image, which reads as a repeated pattern and hides cracks
        near the edge and in small images (docs/method.md, "Image borders").

    The core window, the part of each tile that is kept, has the side :attr:`core_px`.

    >>> TilingConfig(tile_px=1280, halo_px=96).core_px
    1088
    """

    tile_px: int = 1280
    halo_px: int = 96
    border: Border = "image"

    def __post_init__(self) -> None:
        if self.halo_px < MIN_HALO_PX:
            raise _invalid(
                ["tiling.halo_px"],
                f"tiling.halo_px={self.halo_px} is below {MIN_HALO_PX} px, the network's useful "
                f"receptive field; tiles would show seams. Use halo_px >= {MIN_HALO_PX}",
            )
        if self.tile_px - 2 * self.halo_px < 32:
            raise _invalid(
                ["tiling.tile_px", "tiling.halo_px"],
                f"tiling.tile_px={self.tile_px} leaves a core window of "
                f"{self.tile_px - 2 * self.halo_px} px with halo_px={self.halo_px}; "
                f"use tile_px >= 2 * halo_px + 32 (e.g. {2 * self.halo_px + 256})",
            )

    @property
    def core_px(self) -> int:
        """Side of the core window (pixels): ``tile_px - 2 * halo_px``."""
        return self.tile_px - 2 * self.halo_px


@dataclass(frozen=True)
class ModelConfig:
    """Which model runs, where, at what precision.

    Parameters
    ----------
    weights : str or None
        Path to a ``.safetensors`` file with its model card, or None for the shipped default.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision : {'auto', 'bf16', 'fp32'}
        ``auto``: bf16 on CUDA devices with bf16, on CPUs with AMX and on AMD CPUs with
        AVX-512 BF16 (where it was measured clearly faster), else fp32, unless the
        environment variable ``CRACKSURVEY_PRECISION`` says otherwise (see
        :func:`cracksurvey.predict.auto_precision`).
    threshold_px : float or None
        Crack = predicted distance <= this (pixels); None uses the calibrated threshold of the
        model card.
    """

    weights: str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    threshold_px: float | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise _invalid(
                ["model.device"],
                f"model.device={self.device!r} is not a device; use auto, cpu, cuda, cuda:N or mps",
            )


@dataclass(frozen=True)
class VectorizeConfig:
    """Skeleton to polylines.

    Parameters
    ----------
    min_spur_px : int
        Branches ending in a tip shorter than this are pruned as spurs.
    min_crack_length_px : int
        Cracks (connected components of the skeleton graph) shorter than this are dropped.
    smoothing_px : float
        Polyline simplification tolerance in pixels (0 = keep every skeleton vertex).
    bridge_gap_px : int
        Crack tips are linked to the next crack through a valley of the distance map when the
        gap is at most this long (pixels); the crack is flagged ``bridged`` (0 = no bridging;
        docs/method.md, "Gap bridging").
    bridge_valley_px : float or None
        Highest predicted distance (pixels) a bridge may cross: the valley it follows. None: the
        crack threshold plus ``bridge_valley_margin_px``, so the rule follows the model's
        threshold (measured and not made the default: docs/method.md, "Gap bridging").
    bridge_valley_margin_px : float
        With ``bridge_valley_px`` None: how far above the crack threshold (pixels) a bridge's
        valley may rise.
    """

    min_spur_px: int = 8
    min_crack_length_px: int = 15
    smoothing_px: float = 1.0
    bridge_gap_px: int = 16
    bridge_valley_px: float | None = 2.0
    bridge_valley_margin_px: float = 1.5

    def __post_init__(self) -> None:
        for name in (
            "min_spur_px",
            "min_crack_length_px",
            "smoothing_px",
            "bridge_gap_px",
            "bridge_valley_margin_px",
        ):
            _require_non_negative("vectorize", self, name)
        if self.bridge_valley_px is not None:
            _require_non_negative("vectorize", self, "bridge_valley_px")

    def valley_px(self, threshold_px: float) -> float:
        """The highest predicted distance a bridge may cross, for a crack threshold (pixels)."""
        if self.bridge_valley_px is not None:
            return float(self.bridge_valley_px)
        return float(threshold_px) + self.bridge_valley_margin_px


@dataclass(frozen=True)
class SurveyConfig:
    """Survey-level georeferencing defaults.

    Parameters
    ----------
    crs : str or None
        CRS of the survey (any pyproj input, e.g. ``EPSG:32633``). Checked against the CRS of
        every map-georeferenced raster (a mismatch is an error); the CRS of façade planes in
        images.csv and of a buildings layer without a CRS; the CRS of images that have a world
        file but no .prj and are not declared façades.
    gsd_mm : float or None
        Ground sampling distance (mm per pixel) for images with no georeferencing and no
        gsd_mm in images.csv. None leaves such images in pixel units (with a warning).
    district : str or None
        District (or any area name) the survey belongs to; the city-wide report groups surveys
        by it. None: the name of the survey folder.
    """

    crs: str | None = None
    gsd_mm: float | None = None
    district: str | None = None

    def __post_init__(self) -> None:
        if self.crs is not None:
            # imported here: training imports this module (precision) and needs no pyproj
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError as exc:
                raise _invalid(
                    ["survey.crs"],
                    f"survey.crs={self.crs!r} is not a CRS pyproj understands ({exc}); "
                    "use e.g. 'EPSG:32633'",
                ) from None
        if self.gsd_mm is not None:
            _require_positive("survey", self, "gsd_mm")


@dataclass(frozen=True)
class CppConfig:
    """Crack pattern continuity (CPP, docs/method.md, "Continuity: CPP").

    Parameters
    ----------
    patch_px : int
        Side of the square patches the CPP statistic is computed on.
    min_area_px : int
        Connected components smaller than this (in pixels) are ignored.
    """

    patch_px: int = 256
    min_area_px: int = 50

    def __post_init__(self) -> None:
        _require_positive("cpp", self, "patch_px")
        _require_non_negative("cpp", self, "min_area_px")


SemanticsMode = Literal["auto", "on", "off"]
Surface = Literal["wall", "opening", "background"]


@dataclass(frozen=True)
class SemanticsConfig:
    """Façade semantics and no data (:mod:`cracksurvey.semantics`).

    Parameters
    ----------
    mode : {'auto', 'on', 'off'}
        ``auto``: façade images and images in pixel units that show enough of a façade (longest
        side >= 1024 px and, at a known GSD, >= 4 m of wall); never map orthophotos (the model
        was trained on street façades). ``on``: every image large enough. ``off``: every
        pixel is wall.
    weights : str or None
        Semantics model (.safetensors with its card); None: the shipped one.
    keep_on : tuple of {'wall', 'opening', 'background'}
        Cracks are kept when most of their length lies on one of these surfaces.
    fill : {'auto', 'off'}
        ``auto``: constant black or white regions touching the image border (the fill that
        rectification leaves) are no data, like GDAL nodata and alpha.
    fill_tolerance : int
        Grey levels of noise a constant fill may carry (JPEG).
    """

    mode: SemanticsMode = "auto"
    weights: str | None = None
    keep_on: tuple[Surface, ...] = ("wall",)
    fill: Literal["auto", "off"] = "auto"
    fill_tolerance: int = 6

    def __post_init__(self) -> None:
        _require_non_negative("semantics", self, "fill_tolerance")
        if not self.keep_on:
            raise _invalid(["semantics.keep_on"], "semantics.keep_on is empty; use e.g. [wall]")


@dataclass(frozen=True)
class VerifyConfig:
    """Crack verifier (:mod:`cracksurvey.verify`): a second look at every crack.

    ``mode``: ``on`` scores each crack on image patches along it (``verifier_score``) and drops
    those under ``min_score`` (None: the value calibrated in its card); ``auto`` is ``on`` behind
    the crack model it was trained on (its card names it), else ``off``. ``weights``: a
    .safetensors with its card; None: the shipped verifier.
    """

    mode: Literal["auto", "on", "off"] = "auto"
    weights: str | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise _invalid(
                ["verify.min_score"], f"verify.min_score={self.min_score}: not in [0, 1]"
            )


@dataclass(frozen=True)
class DamageConfig:
    """Indicative damage level of each building (:mod:`cracksurvey.damage`).

    Parameters
    ----------
    scale : str
        The damage scale: a name of ``configs/damage/<name>.yaml`` (``default``: levels 0-4
        pointing to the EMS-98 grades for masonry) or a path to a YAML file of the same form
        (relative to the survey directory).
    """

    scale: str = "default"

    def __post_init__(self) -> None:
        if not str(self.scale).strip():
            raise _invalid(["damage.scale"], "damage.scale is empty; use 'default' or a YAML path")


@dataclass(frozen=True)
class EngineConfig:
    """Dask execution (:class:`cracksurvey.engine.Engine`); none of it changes results.

    Parameters
    ----------
    workers : int or None
        Local worker processes; None sizes the local cluster to the machine
        (:func:`cracksurvey.engine.default_layout`).
    threads_per_worker : int
        Task slots per local worker (each worker holds one model instance).
    scheduler : str or None
        Address of an existing Dask scheduler (``tcp://host:8786``); None starts a local cluster.
    torch_threads : int or None
        Torch threads per running task. None: the cores divided among the task slots of the
        local cluster; unchanged in synchronous mode; on an external scheduler, each worker's
        cores divided by its task slots.
    processes : bool
        Local workers as processes (True) or as threads of this process (False).
    max_in_flight : int or None
        Tiles submitted but not yet written; None = 2 per task slot (memory stays flat).
    retries : int
        Extra attempts for a tile task that raised (e.g. a network filesystem hiccup or a GPU
        out of memory); tasks lost with a dead worker are rerun by the scheduler regardless.
    gpu_resource : str
        Dask resource name that GPU workers advertise; when any worker does, tile tasks need
        one unit of it.
    """

    workers: int | None = None
    threads_per_worker: int = 1
    scheduler: str | None = None
    torch_threads: int | None = None
    processes: bool = True
    max_in_flight: int | None = None
    retries: int = 1
    gpu_resource: str = "GPU"

    def __post_init__(self) -> None:
        for name in ("workers", "torch_threads", "max_in_flight"):
            if getattr(self, name) is not None:
                _require_positive("engine", self, name)
        _require_positive("engine", self, "threads_per_worker")
        _require_non_negative("engine", self, "retries")


@dataclass(frozen=True)
class ProcessConfig:
    """Effective configuration of ``cracksurvey process``; one section per stage."""

    tiling: TilingConfig = field(default_factory=TilingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vectorize: VectorizeConfig = field(default_factory=VectorizeConfig)
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    cpp: CppConfig = field(default_factory=CppConfig)
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    damage: DamageConfig = field(default_factory=DamageConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain JSON/YAML-serialisable nested dict (tuples become lists), for run.json."""
        return {
            section.name: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(getattr(self, section.name)).items()
            }
            for section in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str = "config") -> ProcessConfig:
        """Build from one nested mapping over the defaults; errors name ``source``."""
        return build_config([(source, mapping)])


def _require_positive(section: str, obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not value > 0:
        raise _invalid([f"{section}.{name}"], f"{section}.{name}={value} must be > 0")


def _require_non_negative(section: str, obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not value >= 0:
        raise _invalid([f"{section}.{name}"], f"{section}.{name}={value} must be >= 0")


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(ProcessConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ProcessConfig)}


def _unknown_key(source: str, key: str, allowed: Iterable[str], where: str) -> ConfigError:
    allowed = sorted(allowed)
    leaf = key.rsplit(".", 1)[-1]
    return ConfigError(
        f"{source}: unknown key {key!r}{suggest(leaf, allowed)}; "
        f"allowed keys {where}: {', '.join(allowed)}"
    )


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(
            "null" if a is type(None) else _type_name(a) for a in typing.get_args(hint)
        )
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` checked against a type hint (ints accepted as floats); TypeError if invalid."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, bool) and "off" in choices:
            # YAML 1.1 reads a bare on/off as a boolean
            if not value:
                return "off"
            if "on" in choices:
                return "on"
        if value in choices and not isinstance(value, bool):
            return value
        raise TypeError
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg)
            except TypeError:
                pass
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(_coerce(v, typing.get_args(hint)[0]) for v in value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and number and isinstance(value, int):
        return value
    if hint is float and number and math.isfinite(value):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise TypeError  # a value of another type (or an unsupported annotation: a bug)


def _check_layer(source: str, layer: Any) -> dict[str, dict[str, Any]]:
    """Validate one layer's structure, keys and value types; return it normalised."""
    if layer is None:
        return {}
    if not isinstance(layer, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of sections "
            f"({', '.join(_section_types())}), found {type(layer).__name__}"
        )
    sections = _section_types()
    checked: dict[str, dict[str, Any]] = {}
    for section, values in layer.items():
        if section not in sections:
            raise _unknown_key(source, str(section), sections, "at the top level")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{source}: section {section!r} must be a mapping of keys, "
                f"found {type(values).__name__} {values!r}"
            )
        cls = sections[section]
        hints = typing.get_type_hints(cls)
        allowed = [f.name for f in dataclasses.fields(cls)]
        checked[section] = {}
        for key, value in values.items():
            if key not in allowed:
                raise _unknown_key(source, f"{section}.{key}", allowed, f"in {section!r}")
            try:
                checked[section][key] = _coerce(value, hints[key])
            except TypeError:
                raise ConfigError(
                    f"{source}: {section}.{key}={value!r} is not valid; "
                    f"expected {_type_name(hints[key])}"
                ) from None
    return checked


def build_config(layers: Sequence[tuple[str, Mapping[str, Any] | None]]) -> ProcessConfig:
    """Merge config layers over the defaults, later layers winning key by key.

    Parameters
    ----------
    layers : sequence of (source, mapping)
        ``source`` names the layer in error messages (a file path, ``'preset fast'``,
        ``'command line'``); ``mapping`` is ``{section: {key: value}}`` or None.

    Returns
    -------
    ProcessConfig

    Raises
    ------
    ConfigError
        Unknown section or key, wrong value type, or an invalid combination; the message
        names the layer(s) that set the offending values.
    """
    merged: dict[str, dict[str, Any]] = {}
    provenance: dict[str, str] = {}
    for source, layer in layers:
        for section, values in _check_layer(source, layer).items():
            merged.setdefault(section, {}).update(values)
            for key in values:
                provenance[f"{section}.{key}"] = source
    sections = _section_types()
    try:
        return ProcessConfig(**{name: sections[name](**merged.get(name, {})) for name in sections})
    except ConfigError as err:
        keys = getattr(err, "keys", ())
        sources = sorted({provenance.get(k, "defaults") for k in keys}) or ["config"]
        raise ConfigError(f"{', '.join(sources)}: {err}") from None


def parse_set_options(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Turn CLI ``--set section.key=value`` items into a config layer.

    Values are parsed as YAML scalars/flow lists (``512`` is an int, ``null`` is None,
    ``[0.1, 1]`` a list).

    >>> parse_set_options(["tiling.tile_px=512", "model.weights=null"])
    {'tiling': {'tile_px': 512}, 'model': {'weights': None}}
    """
    layer: dict[str, dict[str, Any]] = {}
    for item in items:
        dotted, sep, raw = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(
                f"command line: --set {item!r} is not of the form section.key=value "
                "(e.g. tiling.tile_px=512)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        layer.setdefault(section, {})[key] = value
    return layer
