"""Damage scales: parsing, the shipped EMS-98-worded default, and level assignment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cracksurvey.damage import (
    DAMAGE_COLUMNS,
    assess_damage,
    load_damage_scale,
    parse_damage_scale,
)
from cracksurvey.errors import ConfigError
from cracksurvey.summary import SUMMARY_COLUMNS, summarize_buildings

NAN = math.nan


def summary(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "n_cracks": [1] * n,
        "evidence_cracks": [1] * n,
        "evidence_width_p95_mm": [NAN] * n,
        "evidence_density_m_per_m2": [NAN] * n,
        "n_images": [1] * n,
    }
    return pd.DataFrame({**base, **columns})


def test_default_scale_is_labelled_indicative_and_worded_after_ems98() -> None:
    scale = load_damage_scale()
    assert [v.level for v in scale.levels] == [0, 1, 2, 3, 4]
    assert "not a structural assessment" in scale.disclaimer
    assert "indicative" in scale.name
    for grade, words in (
        (1, "hair-line cracks in very few walls"),
        (2, "cracks in many walls"),
        (3, "large and extensive cracks in most walls"),
        (4, "serious failure of walls"),
    ):
        assert f"EMS-98 grade {grade}" in scale.levels[grade].ems98
        assert words in scale.levels[grade].ems98
    # every bound names a summary column
    assert {c for v in scale.levels for c in (*v.when, *v.requires)} <= set(SUMMARY_COLUMNS)


@pytest.mark.parametrize(
    ("p95", "density", "n_cracks", "expected"),
    [
        (NAN, NAN, 0, 0),  # imaged, no crack
        (0.3, 0.05, 2, 1),  # hairline, few
        (1.0, 1.6, 20, 2),  # the bounds are inclusive
        (0.3, 2.6, 9, 3),  # dense hairline cracks reach level 3 on density alone
        (6.0, 1.7, 20, 3),  # wide cracks over more length than an intact wall shows
        (20.0, 1.7, 20, 4),
        (NAN, 1.7, 3, 2),  # width unknown: the other bound still counts
        (NAN, 1.0, 30, 1),  # under the false-crack density of intact façades: no level 2
        # wide but not extensive: false cracks on intact walls are as wide as real ones
        # (30-32 mm p95 on the held-out intact street façades), so width alone is no level
        (20.0, 0.5, 40, 1),
        (6.0, 1.59, 40, 1),
    ],
)
def test_default_levels_any_bound_highest_level(p95, density, n_cracks, expected) -> None:
    frame = summary(
        evidence_width_p95_mm=[p95], evidence_density_m_per_m2=[density], evidence_cracks=[n_cracks]
    )
    assert assess_damage(frame, load_damage_scale())["damage_level"].tolist() == [expected]


def test_unimaged_building_has_no_level_and_basis_names_the_values() -> None:
    frame = summary(
        evidence_width_p95_mm=[6.0, NAN],
        evidence_density_m_per_m2=[1.7, NAN],
        evidence_cracks=[4, 0],
        n_images=[2, 0],
    )
    damage = assess_damage(frame, load_damage_scale())
    assert list(damage.columns) == list(DAMAGE_COLUMNS)
    assert damage["damage_level"].iloc[0] == 3 and pd.isna(damage["damage_level"].iloc[1])
    assert damage["damage_label"].tolist() == ["substantial to heavy", None]
    assert damage["damage_basis"].iloc[0] == (
        "evidence_width_p95_mm 6 >= 5 with evidence_density_m_per_m2 1.7 >= 1.6"
    )
    assert damage["damage_basis"].iloc[1] is None


def test_summarize_buildings_adds_the_damage_columns() -> None:
    cracks = pd.DataFrame(
        {
            "building_id": ["A"],
            "length_m": [12.0],
            "width_max_mm": [3.0],
            "orientation_deg": [45.0],
            "confidence": [0.9],
        }
    )
    branches = pd.DataFrame(
        {"building_id": ["A"], "length_m": [12.0], "width_mean_mm": [2.0], "confidence": [0.9]}
    )
    coverage = pd.DataFrame(
        {
            "image": ["a.tif", "b.tif"],
            "building_id": ["A", "B"],
            "area_m2": [4.0, 4.0],
            "cpp_fragments": [1, 0],
            "cpp_patches": [1, 1],
        }
    )
    images = pd.DataFrame(
        {"image": ["a.tif", "b.tif"], "building_id": ["A", "B"], "status": ["ok", "ok"]}
    )
    args = (cracks, branches, coverage, images)
    table = summarize_buildings(*args, building_ids=["C"], damage_scale=load_damage_scale())
    assert list(table.columns) == ["building_id", *SUMMARY_COLUMNS]
    levels = dict(zip(table["building_id"], table["damage_level"]))
    assert levels["A"] == 3 and levels["B"] == 0 and pd.isna(levels["C"])  # density 3.0
    unassessed = summarize_buildings(*args)
    assert (
        unassessed["damage_level"].isna().all() and str(unassessed["damage_level"].dtype) == "Int64"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"levels": []}, "levels must be a non-empty list"),
        ({"levels": [{"level": 0, "when": {}}], "colour": 1}, "unknown key(s) colour"),
        ({"levels": [{"level": 1, "when": {}}]}, "levels[0]: level must be 0"),
        ({"levels": [{"level": 0, "when": {"n_cracks": 1}}]}, "levels[0].when must be empty"),
        ({"levels": [{"level": 0}, {"level": 1}]}, "levels[1].when is empty"),
        (
            {"levels": [{"level": 0}, {"level": 1, "when": {"n_cracks": "many"}}]},
            "must map summary columns to numbers",
        ),
        ({"levels": [{"level": 0, "label": "x", "grade": 1}]}, "unknown key(s) grade"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_malformed_scales_are_one_clear_error(document, message) -> None:
    with pytest.raises(ConfigError, match="my.yaml") as caught:
        parse_damage_scale(document, source="my.yaml")
    assert message in str(caught.value)


def test_bound_on_unknown_column_is_an_error() -> None:
    scale = parse_damage_scale({"levels": [{"level": 0}, {"level": 1, "when": {"cracks": 1}}]})
    with pytest.raises(ConfigError, match="unknown summary column"):
        assess_damage(summary(n_cracks=[1]), scale)


def test_load_by_name_or_path(tmp_path: Path) -> None:
    document = {
        "name": "strict",
        "disclaimer": "d",
        "levels": [{"level": 0}, {"level": 1, "when": {"n_cracks": 5}}],
    }
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(document))
    scale = load_damage_scale("strict.yaml", root=tmp_path)
    assert scale.name == "strict" and scale.source == str(tmp_path / "strict.yaml")
    assert parse_damage_scale(scale.to_dict()) == parse_damage_scale(document)
    with pytest.raises(ConfigError, match="no such scale; available: default"):
        load_damage_scale("nonexistent")
    with pytest.raises(ConfigError, match="does not exist"):
        load_damage_scale("missing.yaml", root=tmp_path)
    levels = assess_damage(summary(n_cracks=[4, 5]), scale)["damage_level"]
    assert np.array_equal(levels.to_numpy(dtype=float), [0, 1])


def test_coarse_images_are_not_assessable_and_confidence_is_evidence() -> None:
    """A building whose images cannot see the cracks that grade damage gets no level, whatever
    was detected; the default scale's evidence needs a confidence."""
    scale = load_damage_scale()
    assert scale.min_confidence > 0 and scale.assessable_limit_mm is not None
    frame = summary(
        evidence_width_p95_mm=[20.0, 20.0, NAN],
        evidence_density_m_per_m2=[2.0, 2.0, NAN],
        evidence_cracks=[5, 5, 0],
        detection_limit_mm=[scale.assessable_limit_mm * 3, scale.assessable_limit_mm / 2, NAN],
    )
    damage = assess_damage(frame, scale)
    assert pd.isna(damage["damage_level"].iloc[0])
    assert damage["damage_label"].iloc[0] == "not assessable at this GSD"
    assert "detection limit" in damage["damage_basis"].iloc[0]
    assert damage["damage_level"].iloc[1] == 4  # fine enough: graded
    assert damage["damage_level"].iloc[2] == 0  # limit unknown (pixel units): no such rule


def test_a_width_bound_below_the_detection_limit_is_not_used() -> None:
    """Where every visible (measurable) crack is wider than a bound, that bound says nothing."""
    frame = summary(
        evidence_width_p95_mm=[6.0, 6.0, 6.0],
        evidence_cracks=[30, 30, 30],
        evidence_density_m_per_m2=[1.7, 1.7, 1.7],
        detection_limit_mm=[5.5, 3.6, 0.8],
        width_limit_mm=[3.0, 5.2, 0.8],
    )
    scale = parse_damage_scale({**load_damage_scale().to_dict(), "assessable_limit_mm": None})
    assert assess_damage(frame, scale)["damage_level"].tolist() == [2, 2, 3]


@pytest.mark.parametrize(
    ("requires", "expected"),
    [({"n_cracks": 5}, [0, 1]), ({"n_cracks": 5, "evidence_cracks": 5}, [0, 0]), ({}, [1, 1])],
)
def test_requires_bounds_must_all_be_reached(requires, expected) -> None:
    scale = parse_damage_scale(
        {
            "levels": [
                {"level": 0},
                {"level": 1, "when": {"evidence_cracks": 1}, "requires": requires},
            ]
        }
    )
    assert parse_damage_scale(scale.to_dict()) == scale
    frame = summary(n_cracks=[4, 5], evidence_cracks=[1, 1])
    assert assess_damage(frame, scale)["damage_level"].tolist() == expected


def test_malformed_requires_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="levels\\[1\\].requires must map"):
        parse_damage_scale(
            {
                "levels": [
                    {"level": 0},
                    {"level": 1, "when": {"n_cracks": 1}, "requires": {"n_cracks": "x"}},
                ]
            }
        )
    with pytest.raises(ConfigError, match="levels\\[0\\].requires must be empty"):
        parse_damage_scale({"levels": [{"level": 0, "requires": {"n_cracks": 1}}]})
