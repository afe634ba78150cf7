"""Building join and per-building summaries on hand-made tables with exact expected numbers."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from cracksurvey.summary import (
    SUMMARY_COLUMNS,
    building_geometries,
    footprints_in,
    join_cracks_to_footprints,
    join_points_to_footprints,
    orientation_class,
    summarize_buildings,
    weighted_quantile,
)


def test_orientation_bins_edges() -> None:
    angles = [0.0, 22.4, 22.5, 67.4, 67.5, 90.0, 112.4, 112.5, 157.4, 157.5, 179.9, np.nan]
    assert orientation_class(angles).tolist() == [
        "horizontal",
        "horizontal",
        "diagonal",
        "diagonal",
        "vertical",
        "vertical",
        "vertical",
        "diagonal",
        "diagonal",
        "horizontal",
        "horizontal",
        None,
    ]


def test_weighted_quantile() -> None:
    # 95 % of the length is at most 2 mm wide
    assert weighted_quantile([1.0, 2.0, 10.0], [90.0, 6.0, 4.0], 0.95) == 2.0
    assert weighted_quantile([1.0, 2.0, 10.0], [90.0, 4.0, 6.0], 0.95) == 10.0
    assert weighted_quantile([np.nan, 3.0], [5.0, 1.0], 0.95) == 3.0
    assert math.isnan(weighted_quantile([np.nan], [1.0], 0.5))


def tables():
    cracks = pd.DataFrame(
        {
            "building_id": ["A", "A", "A", "B", None],
            "length_m": [1.0, 3.0, 2.0, np.nan, 5.0],
            "width_max_mm": [0.5, 2.0, 1.0, np.nan, 9.0],
            "orientation_deg": [90.0, 45.0, 0.0, 10.0, 0.0],
        }
    )
    branches = pd.DataFrame(
        {
            "building_id": ["A", "A", "A", "A"],
            "length_m": [1.0, 2.5, 0.5, 2.0],
            "width_mean_mm": [0.4, 1.5, 1.8, 0.8],
        }
    )
    coverage = pd.DataFrame(
        {
            "image": ["f1", "f2", "ortho", "px"],
            "building_id": ["A", "A", "C", "B"],
            "area_m2": [2.0, 4.0, 10.0, np.nan],
            "cpp_fragments": [3, 1, 0, 4],
            "cpp_patches": [2, 2, 5, 2],
        }
    )
    images = pd.DataFrame(
        {
            "image": ["f1", "f2", "ortho", "px", "bad", "bad2"],
            "building_id": ["A", "A", None, "B", "A", None],
            "status": ["ok", "ok", "ok", "ok", "error", "error"],
        }
    )
    return cracks, branches, coverage, images


def test_summary_numbers() -> None:
    summary = summarize_buildings(*tables(), building_ids=["A", "C", "D"])
    assert list(summary.columns) == ["building_id", *SUMMARY_COLUMNS]
    assert list(summary["building_id"]) == ["A", "B", "C", "D"]
    a, b, c, d = (row for _, row in summary.iterrows())

    assert a["n_cracks"] == 3
    assert a["total_length_m"] == 6.0
    assert a["longest_crack_m"] == 3.0
    assert a["mean_crack_length_m"] == 2.0
    assert a["width_max_mm"] == 2.0
    # branch widths sorted 0.4 (1.0 m), 0.8 (2.0 m), 1.5 (2.5 m), 1.8 (0.5 m): 95 % of 6 m = 5.7
    assert a["width_p95_mm"] == 1.8
    assert a["imaged_area_m2"] == 6.0
    assert a["crack_density_m_per_m2"] == 1.0
    assert a["share_vertical"] == pytest.approx(1 / 6)
    assert a["share_diagonal"] == pytest.approx(3 / 6)
    assert a["share_horizontal"] == pytest.approx(2 / 6)
    assert a["cpp_mean"] == 1.0 and a["cpp_patches"] == 4
    assert a["fragments_per_m"] == 0.5
    assert a["largest_crack_share"] == 0.5
    assert a["n_images"] == 2 and a["n_images_failed"] == 1

    # B: one crack in pixel units: counted, but no metric statistics; CPP still known
    assert b["n_cracks"] == 1 and math.isnan(b["total_length_m"])
    assert math.isnan(b["crack_density_m_per_m2"]) and math.isnan(b["share_vertical"])
    assert b["cpp_mean"] == 2.0 and b["n_images"] == 1

    # C: imaged, no crack -> 0 m, density 0 (not unknown)
    assert c["n_cracks"] == 0 and c["total_length_m"] == 0.0
    assert c["crack_density_m_per_m2"] == 0.0 and c["cpp_mean"] == 0.0
    assert c["longest_crack_m"] == 0.0

    # D: a footprint without any image -> unknown, not undamaged
    assert d["n_images"] == 0 and math.isnan(d["total_length_m"])
    assert math.isnan(d["crack_density_m_per_m2"]) and math.isnan(d["cpp_mean"])

    assert summary["n_cracks"].dtype == np.int64
    assert summary["total_length_m"].dtype == np.float64


def test_summary_of_nothing() -> None:
    empty = [frame.iloc[:0] for frame in tables()]
    summary = summarize_buildings(*empty)
    assert len(summary) == 0 and list(summary.columns) == ["building_id", *SUMMARY_COLUMNS]


def test_missing_column_is_named() -> None:
    cracks, branches, coverage, images = tables()
    with pytest.raises(ValueError, match="cracks lacks column.*orientation_deg"):
        summarize_buildings(cracks.drop(columns="orientation_deg"), branches, coverage, images)


@pytest.fixture
def footprints() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"building_id": ["L", "R"]},
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)],
        crs="EPSG:32633",
    )


def test_crack_goes_to_the_footprint_it_overlaps_most(footprints) -> None:
    cracks = gpd.GeoSeries(
        [
            shapely.MultiLineString([[(2, 5), (13, 5)]]),  # 8 m in L, 3 m in R
            shapely.MultiLineString([[(8, 1), (19, 1)]]),  # 2 m in L, 9 m in R
            shapely.MultiLineString([[(30, 30), (31, 31)]]),  # outside
        ],
        crs="EPSG:32633",
    )
    assert join_cracks_to_footprints(cracks, footprints).tolist() == ["L", "R", None]
    assert join_cracks_to_footprints(cracks, None).tolist() == [None, None, None]


def test_points_and_reprojection(footprints) -> None:
    assert join_points_to_footprints([(5, 5), (15, 5), (50, 5)], footprints).tolist() == [
        "L",
        "R",
        None,
    ]
    overlapping = pd.concat([footprints, footprints.assign(building_id=["X", "Y"])])
    assert join_points_to_footprints([(5, 5)], overlapping).tolist() == ["L"]
    moved = footprints_in(footprints.to_crs("EPSG:3857"), footprints.crs)
    assert moved.crs.equals(footprints.crs)
    assert moved.geometry.iloc[0].equals_exact(footprints.geometry.iloc[0], 1e-6)
    no_crs = footprints.set_crs(None, allow_override=True)
    assert footprints_in(no_crs, footprints.crs).crs.equals(footprints.crs)
    assert footprints_in(footprints, None) is None


def test_building_geometries(footprints) -> None:
    images = {
        "N": [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)],
        "L": [shapely.box(0, 0, 1, 1)],
    }
    geometries = building_geometries(["L", "N", "Q"], footprints, images)
    assert geometries[0].geom_type == "MultiPolygon" and geometries[0].area == 100.0
    assert geometries[1].geom_type == "MultiPolygon" and geometries[1].area == 2.0
    assert geometries[2] is None
