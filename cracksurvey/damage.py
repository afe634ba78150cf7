"""Indicative damage level of a building from its crack summary (not a structural assessment).

A :class:`DamageScale` is a list of levels, each with a label, the EMS-98 damage-grade wording
for masonry it points to, and lower bounds (``when``) on columns of the building summary. A
building reaches a level when **any** of the level's bounds is reached and **all** of its
``requires`` bounds (if any) are; its level is the highest level reached. Level 0 has no
bound, so every imaged building reaches it. Unknown (NaN) values reach nothing; a building
without a processed image gets no level (unknown, not undamaged).

The shipped scale is ``configs/damage/default.yaml`` (its comments document the thresholds);
the ``damage.scale`` config key names another one (``configs/damage/<name>.yaml``) or a YAML
path. :func:`load_damage_scale` reads it; :func:`parse_damage_scale` and
:func:`assess_damage` are pure.

Examples
--------
>>> import pandas as pd
>>> scale = parse_damage_scale({"name": "toy", "disclaimer": "indicative", "levels": [
...     {"level": 0, "label": "none", "ems98": "-", "when": {}},
...     {"level": 1, "label": "slight", "ems98": "grade 1", "when": {"n_cracks": 1}},
...     {"level": 2, "label": "moderate", "ems98": "grade 2", "when": {"width_p95_mm": 1.0}}]})
>>> summary = pd.DataFrame({"n_cracks": [0, 3, 5], "width_p95_mm": [float("nan"), 0.4, 2.0],
...                         "n_images": [1, 1, 1]})
>>> assess_damage(summary, scale)["damage_level"].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cracksurvey.errors import ConfigError

__all__ = [
    "DAMAGE_COLUMNS",
    "DAMAGE_SCALE_DIR",
    "NOT_ASSESSABLE",
    "DamageLevel",
    "DamageScale",
    "assess_damage",
    "load_damage_scale",
    "parse_damage_scale",
]

#: Label of a building whose images are too coarse to tell its damage level.
NOT_ASSESSABLE = "not assessable at this GSD"

#: Named damage scales: ``configs/damage/<name>.yaml`` of the source tree.
DAMAGE_SCALE_DIR = Path(__file__).resolve().parents[1] / "configs" / "damage"

#: Columns :func:`assess_damage` adds to the building summary, and what they mean.
DAMAGE_COLUMNS: dict[str, str] = {
    "damage_level": "indicative damage level (0 = no crack detected; levels point to EMS-98 "
    "grades for masonry); NOT a structural assessment; empty = not imaged",
    "damage_label": "wording of the indicative damage level",
    "damage_basis": "the summary values that set the level (value >= threshold)",
}


@dataclass(frozen=True)
class DamageLevel:
    """One level of a damage scale.

    Parameters
    ----------
    level : int
        0, 1, 2 ... (consecutive).
    label : str
        Short wording, e.g. ``'moderate'``.
    ems98 : str
        The EMS-98 damage-grade wording (masonry) the level points to, paraphrased.
    when : mapping of str to float
        Lower bounds on summary columns; reaching any one reaches the level. Empty: always.
    requires : mapping of str to float
        Lower bounds that must all be reached as well (e.g. a crack density under which no
        width counts); empty: none.
    """

    level: int
    label: str
    ems98: str
    when: Mapping[str, float]
    requires: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DamageScale:
    """A damage scale: levels in increasing order, a name, a disclaimer and where it came from."""

    name: str
    disclaimer: str
    levels: tuple[DamageLevel, ...]
    source: str = ""
    #: cracks at or above this confidence are evidence (the ``evidence_*`` summary columns)
    min_confidence: float = 0.0
    #: cracks at least this long (metres) and at least this straight are not evidence (an
    #: architectural edge or an overhead cable, not a crack); None: no such rule
    straight_line_min_length_m: float | None = None
    straight_line_min_straightness: float = 0.98
    #: a building whose images cannot see cracks this wide (detection limit above it) is "not
    #: assessable at this GSD", whatever was detected; None: no such rule
    assessable_limit_mm: float | None = None

    def label(self, level: int) -> str:
        """The label of ``level``."""
        return self.levels[level].label

    def to_dict(self) -> dict[str, Any]:
        """The scale as written in run.json (:func:`parse_damage_scale` reads it back)."""
        return {
            "name": self.name,
            "disclaimer": self.disclaimer,
            "min_confidence": self.min_confidence,
            "straight_line_min_length_m": self.straight_line_min_length_m,
            "straight_line_min_straightness": self.straight_line_min_straightness,
            "assessable_limit_mm": self.assessable_limit_mm,
            "levels": [
                {
                    "level": v.level,
                    "label": v.label,
                    "ems98": v.ems98,
                    "when": dict(v.when),
                    **({"requires": dict(v.requires)} if v.requires else {}),
                }
                for v in self.levels
            ],
        }


def _scale_error(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}")


def _parse_level(item: Any, index: int, source: str) -> DamageLevel:
    where = f"levels[{index}]"
    if not isinstance(item, Mapping):
        raise _scale_error(source, f"{where} must be a mapping with level, label, ems98, when")
    unknown = sorted(set(item) - {"level", "label", "ems98", "when", "requires"})
    if unknown:
        raise _scale_error(
            source,
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: level, label, ems98, when, "
            "requires",
        )
    if item.get("level") != index:
        raise _scale_error(
            source,
            f"{where}: level must be {index} (levels are 0, 1, 2 ... in "
            f"order), found {item.get('level')!r}",
        )
    when = item.get("when") or {}
    if not isinstance(when, Mapping) or not all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in when.values()
    ):
        raise _scale_error(source, f"{where}.when must map summary columns to numbers")
    if index > 0 and not when:
        raise _scale_error(source, f"{where}.when is empty; only level 0 may have no bound")
    requires = item.get("requires") or {}
    if not isinstance(requires, Mapping) or not all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in requires.values()
    ):
        raise _scale_error(source, f"{where}.requires must map summary columns to numbers")
    if index == 0 and requires:
        raise _scale_error(source, "levels[0].requires must be empty (level 0 has no bound)")
    return DamageLevel(
        index,
        str(item.get("label", "")),
        str(item.get("ems98", "")),
        {str(k): float(v) for k, v in when.items()},
        {str(k): float(v) for k, v in requires.items()},
    )


def parse_damage_scale(mapping: Any, *, source: str = "damage scale") -> DamageScale:
    """Validate a damage scale mapping (the YAML document); errors name ``source``.

    Raises
    ------
    ConfigError
        Unknown keys, levels not numbered 0, 1, 2 ..., non-numeric bounds.
    """
    if not isinstance(mapping, Mapping):
        raise _scale_error(source, "a damage scale must be a mapping with name, disclaimer, levels")
    allowed = {
        "name",
        "disclaimer",
        "levels",
        "min_confidence",
        "assessable_limit_mm",
        "straight_line_min_length_m",
        "straight_line_min_straightness",
    }
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise _scale_error(
            source, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    min_confidence = mapping.get("min_confidence", 0.0)
    limit = mapping.get("assessable_limit_mm")
    if not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1:
        raise _scale_error(
            source, f"min_confidence={min_confidence!r}: expected a number in [0, 1]"
        )
    if limit is not None and (not isinstance(limit, (int, float)) or limit <= 0):
        raise _scale_error(
            source, f"assessable_limit_mm={limit!r}: expected a positive number or null"
        )
    levels = mapping.get("levels")
    if not isinstance(levels, list) or not levels:
        raise _scale_error(source, "levels must be a non-empty list")
    parsed = tuple(_parse_level(item, i, source) for i, item in enumerate(levels))
    if parsed[0].when:
        raise _scale_error(
            source, "levels[0].when must be empty (every imaged building is at least level 0)"
        )
    straight_length = mapping.get("straight_line_min_length_m")
    straightness = mapping.get("straight_line_min_straightness", 0.98)
    if straight_length is not None and (
        not isinstance(straight_length, (int, float)) or straight_length <= 0
    ):
        raise _scale_error(
            source,
            f"straight_line_min_length_m={straight_length!r}: expected a positive number or null",
        )
    if not isinstance(straightness, (int, float)) or not 0 < straightness <= 1:
        raise _scale_error(
            source, f"straight_line_min_straightness={straightness!r}: expected a number in (0, 1]"
        )
    return DamageScale(
        str(mapping.get("name", "")),
        str(mapping.get("disclaimer", "")),
        parsed,
        source,
        min_confidence=float(min_confidence),
        assessable_limit_mm=None if limit is None else float(limit),
        straight_line_min_length_m=None if straight_length is None else float(straight_length),
        straight_line_min_straightness=float(straightness),
    )


def load_damage_scale(
    scale: str | Path = "default", *, root: str | Path | None = None
) -> DamageScale:
    """Read a damage scale: a name in ``configs/damage/`` or a YAML path.

    Parameters
    ----------
    scale : str or Path
        ``'default'``, another name of ``configs/damage/<name>.yaml``, or a path to a YAML file.
    root : Path, optional
        Relative paths are taken relative to it (the survey directory).
    """
    from cracksurvey.io.survey_files import read_yaml

    path = Path(scale)
    if path.suffix not in (".yaml", ".yml"):
        path = DAMAGE_SCALE_DIR / f"{scale}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in DAMAGE_SCALE_DIR.glob("*.yaml"))
            raise ConfigError(
                f"damage.scale={str(scale)!r}: no such scale; available: "
                f"{', '.join(names)} (in {DAMAGE_SCALE_DIR}), or a YAML path"
            )
    elif not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_file():
        raise ConfigError(f"damage.scale={str(scale)!r}: {path} does not exist")
    return parse_damage_scale(read_yaml(path), source=str(path))


def _reached(
    values: pd.DataFrame, bounds: Mapping[str, float], *, every: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Per building: whether any bound (``every``: all bounds) is reached, and the
    ``column value >= bound`` texts of those reached.

    A bound on a width in millimetres is not used for a building whose detection limit (or
    width limit: the narrowest width its images measure) is above it: every crack such images
    can see or measure is wider than the bound, so reaching it says nothing. Widths below the
    width limit are not numbers (docs/method.md, "Crack width") and reach no bound.
    """
    hit = np.full(len(values), every, dtype=bool)
    basis = [""] * len(values)
    limit = np.full(len(values), np.nan)
    for name in ("detection_limit_mm", "width_limit_mm"):
        if name in values:
            limit = np.fmax(limit, values[name].to_numpy(dtype=np.float64))
    for column, bound in bounds.items():
        column_values = values[column].to_numpy(dtype=np.float64)
        column_hit = np.isfinite(column_values) & (column_values >= bound)
        if "width" in column and column.endswith("_mm"):
            column_hit &= ~(np.isfinite(limit) & (limit > bound))
        for i in np.flatnonzero(column_hit):
            text = f"{column} {column_values[i]:.3g} >= {bound:g}"
            basis[i] = f"{basis[i]}; {text}" if basis[i] else text
        hit = hit & column_hit if every else hit | column_hit
    return hit, basis


def assess_damage(summary: pd.DataFrame, scale: DamageScale) -> pd.DataFrame:
    """Indicative damage level of each building of a summary.

    Parameters
    ----------
    summary : pandas.DataFrame
        The building summary (:func:`cracksurvey.summary.summarize_buildings`), with
        ``n_images`` and every column the scale's bounds name.
    scale : DamageScale

    Returns
    -------
    pandas.DataFrame
        Index of ``summary``; columns :data:`DAMAGE_COLUMNS`: ``damage_level`` (Int64, NA for
        buildings without a processed image), ``damage_label`` and ``damage_basis`` (str or
        None).

    Raises
    ------
    ConfigError
        A bound names a column the summary does not have.
    """
    needed = {c for level in scale.levels for c in (*level.when, *level.requires)} | {"n_images"}
    missing = sorted(needed - set(summary.columns))
    if missing:
        raise _scale_error(
            scale.source or "damage scale",
            f"bound(s) on unknown summary column(s) {', '.join(missing)}",
        )
    level = np.zeros(len(summary), dtype=np.int64)
    basis: list[str] = ["no crack detected"] * len(summary)
    for item in scale.levels[1:]:
        hit, texts = _reached(summary, item.when)
        if item.requires:
            also, also_texts = _reached(summary, item.requires, every=True)
            hit &= also
            texts = [f"{t} with {a}" for t, a in zip(texts, also_texts)]
        level[hit] = item.level
        for i in np.flatnonzero(hit):
            basis[i] = texts[i]
    imaged = summary["n_images"].to_numpy() > 0
    assessed = imaged.copy()
    labels = [scale.label(int(v)) if ok else None for v, ok in zip(level, imaged)]
    if scale.assessable_limit_mm is not None and "detection_limit_mm" in summary:
        limit = summary["detection_limit_mm"].to_numpy(dtype=np.float64)
        blind = imaged & np.isfinite(limit) & (limit > scale.assessable_limit_mm)
        for i in np.flatnonzero(blind):
            labels[i] = NOT_ASSESSABLE
            basis[i] = (
                f"detection limit {limit[i]:.3g} mm > {scale.assessable_limit_mm:g} mm: the "
                f"images are too coarse to grade damage from cracks (level {int(level[i])} "
                "would have been given)"
            )
        assessed &= ~blind
    return pd.DataFrame(
        {
            "damage_level": pd.Series(level, dtype="Int64", index=summary.index).where(assessed),
            "damage_label": pd.Series(labels, dtype=object, index=summary.index),
            "damage_basis": pd.Series(
                [b if ok else None for b, ok in zip(basis, imaged)],
                dtype=object,
                index=summary.index,
            ),
        },
        index=summary.index,
    )
