"""Building summaries on a known crack pattern, and the report's numbers against the outputs.

The synthetic survey (:func:`make_known_survey`) has, per building, cracks drawn with known
lengths and directions; the oracle model of test_process turns exactly the drawn pixels into
the crack mask, so the whole chain (engine, skeleton, vectorize, join, summary, GeoPackage,
report) runs for real and the summary must equal the drawn values.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
import pytest
import torch
from affine import Affine
from click.testing import CliRunner
from conftest import (
    FAST,
    UTM33,
    UTM33_ORIGIN,
    box_ring,
    crack_array,
    make_buildings,
    make_geotiff,
    make_image,
    save_oracle,
    write_images_csv,
    write_survey_yaml,
)
from PIL import Image

from cracksurvey.cli import main
from cracksurvey.process import process_survey
from cracksurvey.report.html import format_value

X0, Y0 = UTM33_ORIGIN
#: Tiles with a 192-px core (few tiles), CPP on 64-px patches.
SETTINGS = {
    **FAST,
    "tiling": {"tile_px": 320, "halo_px": 64},
    "cpp": {"patch_px": 64, "min_area_px": 4},
}

#: The test damage scale: level 2 from 0.8 m of cracks, level 3 from half the length diagonal.
SCALE = {
    "name": "test scale",
    "disclaimer": "test thresholds",
    "levels": [
        {"level": 0, "label": "none", "ems98": "no crack", "when": {}},
        {"level": 1, "label": "some", "ems98": "grade 1", "when": {"n_cracks": 1}},
        {"level": 2, "label": "long", "ems98": "grade 2", "when": {"total_length_m": 0.8}},
        {"level": 3, "label": "shear", "ems98": "grade 3", "when": {"share_diagonal": 0.5}},
    ],
}

#: What was drawn, per building: lengths (m) and orientation class of each crack, gsd (m),
#: imaged area (m²), expected level; CPP fragments / patches where exact.
F1_GSD, F2_GSD, MAP_GSD = 0.002, 0.004, 0.01
KNOWN = {
    # façade 256 x 448 px at 2 mm: a horizontal crack, cols 64-383 of row 100 (320 px), and
    # a vertical one, rows 32-223 of col 416 (192 px): 5 + 4 fragments in 4 x 7 patches
    "F1": {
        "lengths": [319 * F1_GSD, 191 * F1_GSD],
        "classes": ["horizontal", "vertical"],
        "gsd": F1_GSD,
        "area": 256 * 448 * F1_GSD**2,
        "level": 2,
        "cpp": (9, 28),
        "width_px": 3,
    },
    # façade 256 x 256 px at 4 mm: one diagonal crack (40, 40) -> (215, 215)
    "F2": {
        "lengths": [175 * math.sqrt(2) * F2_GSD],
        "classes": ["diagonal"],
        "gsd": F2_GSD,
        "area": 256 * 256 * F2_GSD**2,
        "level": 3,
        "cpp": None,
        "width_px": 3,
    },
    # map GeoTIFF 200 x 300 px at 1 cm, joined by footprint: M1 (left half) has a horizontal
    # crack of 100 px; M2 (right half) none; D has a footprint and no image
    "M1": {
        "lengths": [99 * MAP_GSD],
        "classes": ["horizontal"],
        "gsd": MAP_GSD,
        "area": 2.0 * 1.5,
        "level": 2,
        "cpp": None,
        "width_px": 3,
    },
    "M2": {
        "lengths": [],
        "classes": [],
        "gsd": MAP_GSD,
        "area": 2.0 * 1.5,
        "level": 0,
        "cpp": None,
        "width_px": None,
    },
}


def make_known_survey(root: Path, *, district: str | None = None) -> Path:
    """The survey of :data:`KNOWN`: two façades (gsd in images.csv, footprints F1, F2), one map
    GeoTIFF over two footprints, one footprint without an image, and the test damage scale."""
    images = root / "images"
    images.mkdir(parents=True)
    make_image(
        images / "f1.png",
        crack_array((256, 448), width_px=3, polyline=[(100, 64), (100, 383)])
        & crack_array((256, 448), width_px=3, polyline=[(32, 416), (223, 416)]),
    )
    make_image(
        images / "f2.png", crack_array((256, 256), width_px=3, polyline=[(40, 40), (215, 215)])
    )
    make_geotiff(
        images / "map.tif",
        crack_array((150, 400), width_px=3, polyline=[(75, 50), (75, 149)]),
        Affine(MAP_GSD, 0, X0, 0, -MAP_GSD, Y0),
        UTM33,
    )
    write_images_csv(
        root / "images.csv",
        [
            {"image": "f1.png", "building_id": "F1", "facade_id": "F1-S", "gsd_mm": 2},
            {"image": "f2.png", "building_id": "F2", "facade_id": "F2-W", "gsd_mm": 4},
        ],
    )
    make_buildings(
        root / "buildings.gpkg",
        {
            "M1": box_ring(X0, Y0 - 1.5, X0 + 2, Y0),
            "M2": box_ring(X0 + 2, Y0 - 1.5, X0 + 4, Y0),
            "D": box_ring(X0 + 6, Y0 - 1.5, X0 + 8, Y0),
            "F1": box_ring(X0, Y0 - 12, X0 + 6, Y0 - 4),
            "F2": box_ring(X0 + 8, Y0 - 12, X0 + 12, Y0 - 6),
        },
    )
    (root / "scale.yaml").write_text(json.dumps(SCALE))
    survey = {"crs": UTM33, **({"district": district} if district else {})}
    write_survey_yaml(root / "survey.yaml", {"survey": survey, "damage": {"scale": "scale.yaml"}})
    return root


def process_known(root: Path, weights: Path, out: Path | None = None):
    torch.set_num_threads(1)
    return process_survey(root, out_dir=out, weights=weights, overrides=SETTINGS, synchronous=True)


@dataclass
class Known:
    """The processed known survey, its weights, and the GDAL sidecar files found right after
    processing (before the tests read the GeoPackage themselves)."""

    summary: Any
    weights: Path
    sidecars: list[Path]


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Known:
    base = tmp_path_factory.mktemp("known")
    weights = save_oracle(base)
    summary = process_known(make_known_survey(base / "centre"), weights)
    return Known(summary, weights, sorted(base.rglob("*.aux.xml")))


def read_buildings(out: Path) -> pd.DataFrame:
    frame = pyogrio.read_dataframe(out / "cracks.gpkg", layer="buildings")
    return pd.DataFrame(frame.drop(columns="geometry")).set_index("building_id")


# --------------------------------------------------------------------------------------------
# The summary equals the drawn pattern
# --------------------------------------------------------------------------------------------
def test_summary_equals_the_known_crack_pattern(known) -> None:
    summary = known.summary
    table = read_buildings(summary.out_dir)
    assert sorted(table.index) == ["D", "F1", "F2", "M1", "M2"]
    for building, drawn in KNOWN.items():
        row = table.loc[building]
        lengths = np.asarray(drawn["lengths"])
        total = lengths.sum()
        assert row["n_cracks"] == len(lengths), building
        assert row["total_length_m"] == pytest.approx(total, rel=0.02, abs=1e-12), building
        assert row["imaged_area_m2"] == pytest.approx(drawn["area"], rel=1e-9), building
        assert row["crack_density_m_per_m2"] == pytest.approx(total / drawn["area"], rel=0.02)
        assert row["damage_level"] == drawn["level"], building
        assert row["n_images"] == 1 and row["n_images_failed"] == 0
        if not len(lengths):
            assert row["longest_crack_m"] == 0 and np.isnan(row["share_diagonal"])
            continue
        assert row["longest_crack_m"] == pytest.approx(lengths.max(), rel=0.02), building
        assert row["mean_crack_length_m"] == pytest.approx(total / len(lengths), rel=0.02)
        assert row["fragments_per_m"] == pytest.approx(len(lengths) / total, rel=0.02)
        assert row["largest_crack_share"] == pytest.approx(lengths.max() / total, rel=0.02)
        for name in ("horizontal", "vertical", "diagonal"):
            share = lengths[[c == name for c in drawn["classes"]]].sum() / total
            assert row[f"share_{name}"] == pytest.approx(share, rel=0.02, abs=1e-9), building
        width_mm = drawn["width_px"] * drawn["gsd"] * 1000
        assert row["width_max_mm"] == pytest.approx(width_mm, abs=drawn["gsd"] * 1000)
        assert row["width_p95_mm"] <= row["width_max_mm"] + 1e-9
    f1 = table.loc["F1"]
    fragments, patches = KNOWN["F1"]["cpp"]
    assert f1["cpp_patches"] == patches and f1["cpp_mean"] == pytest.approx(fragments / patches)
    not_imaged = table.loc["D"]
    assert np.isnan(not_imaged["damage_level"]) and not_imaged["n_images"] == 0
    assert np.isnan(not_imaged["total_length_m"])


def test_damage_columns_name_their_basis(known) -> None:
    table = read_buildings(known.summary.out_dir)
    assert table.loc["F2", "damage_label"] == "shear"
    assert table.loc["F2", "damage_basis"].startswith("share_diagonal 1 >= 0.5")
    assert table.loc["M2", "damage_basis"] == "no crack detected"
    assert pd.isna(table.loc["D", "damage_label"])
    run = json.loads((known.summary.out_dir / "run.json").read_text())
    assert run["damage_scale"]["name"] == "test scale"
    assert run["damage_scale"]["source"].endswith("scale.yaml")
    assert run["outputs"]["report"] == "report.html"


# --------------------------------------------------------------------------------------------
# The report shows the GeoPackage's and summary.csv's numbers
# --------------------------------------------------------------------------------------------
class _Cells(HTMLParser):
    """Collects elements with ``data-column`` (value, text, and the ``data-building`` and
    ``data-survey`` of the row or section holding them) and the ranked building rows."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.rows: list[list[dict[str, str]]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self._open: dict[str, str] | None = None
        self._depth = 0
        self._building = ("", "")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("src", "href") if k in a and not a[k].startswith("#")]
        if "data-building" in a:
            self._building = (a.get("data-survey", ""), a["data-building"])
        if tag == "image":
            self.images.append(a.get("href", ""))
        if tag == "tr" and "building-row" in a.get("class", ""):
            self.rows.append([])
        if "data-column" in a:
            self._open = {
                "column": a["data-column"],
                "value": a.get("data-value", ""),
                "text": "",
                "survey": self._building[0],
                "building": self._building[1],
            }
            self._depth = 0
        elif self._open is not None:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._open is None:
            return
        if self._depth:
            self._depth -= 1
            return
        self.cells.append(self._open)
        if self.rows and tag == "td":
            self.rows[-1].append(self._open)
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data


def parse_report(path: Path) -> _Cells:
    parser = _Cells()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def assert_cell_matches(cell: dict[str, str], gpkg_value, csv_value) -> None:
    column = cell["column"]
    assert cell["text"] == format_value(column, gpkg_value), cell
    if pd.isna(gpkg_value):
        assert cell["value"] == "" and pd.isna(csv_value), cell
    elif isinstance(gpkg_value, str):
        assert cell["value"] == gpkg_value == str(csv_value), cell
    else:
        assert float(cell["value"]) == float(gpkg_value), cell  # exact: same float
        assert float(cell["value"]) == pytest.approx(float(csv_value), rel=1e-9), cell


def test_report_numbers_equal_geopackage_and_summary_csv(known) -> None:
    out = known.summary.out_dir
    gpkg = read_buildings(out)
    csv = pd.read_csv(out / "summary.csv", dtype={"building_id": str}).set_index("building_id")
    report = parse_report(out / "report.html")
    # ranked table: one row per building, most damaged first
    ranked = [next(c["value"] for c in row if c["column"] == "building_id") for row in report.rows]
    assert ranked == ["F2", "F1", "M1", "M2", "D"]
    checked = 0
    for cell in report.cells:
        building = cell["building"]
        if cell["column"] == "building_id":
            assert cell["value"] == building
            continue
        assert_cell_matches(
            cell, gpkg.loc[building, cell["column"]], csv.loc[building, cell["column"]]
        )
        checked += 1
    # every summary column of every building in its section, plus table and continuity cells
    assert checked >= len(gpkg) * len(csv.columns)


def test_report_is_self_contained_and_small(known) -> None:
    out = known.summary.out_dir
    report = parse_report(out / "report.html")
    assert report.urls == [] or all(u.startswith("data:") for u in report.urls)
    assert report.images and all(i.startswith("data:image/jpeg;base64,") for i in report.images)
    # one thumbnail per imaged building: F1, F2, and the map image for M1 and M2 (cropped)
    assert len(report.images) == 4
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "<script" not in html and "@media print" in html
    assert "Indicative, not a structural assessment" in html
    assert "oracle-dark-pixels" in html and "4.0 px" in html  # provenance: model, threshold
    assert (out / "report.html").stat().st_size < 2_000_000
    # the report read the outputs and images back and left no GDAL sidecar file behind
    assert known.sidecars == []


def test_crack_overlays_lie_on_the_cracks_of_their_thumbnails(known) -> None:
    html = (known.summary.out_dir / "report.html").read_text(encoding="utf-8")
    overlays = re.findall(r'<svg class="overlay".*?</svg>', html)
    assert len(overlays) == 4
    n_lines = 0
    for svg in overlays:
        data = re.search(r'href="data:image/jpeg;base64,([^"]+)"', svg).group(1)
        grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))
        for line in re.findall(r'<polyline points="([^"]+)"', svg):
            n_lines += 1
            for x, y in (map(float, point.split(",")) for point in line.split()):
                row, col = int(y), int(x)
                around = grey[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2]
                assert around.min() < 60, (x, y)  # the drawn crack is 0, the wall 204
    assert n_lines == 4  # F1: 2 cracks, F2: 1, M1: 1; M2's crop shows none of M1's cracks


# --------------------------------------------------------------------------------------------
# City-wide
# --------------------------------------------------------------------------------------------
def test_city_report_merges_surveys(known, tmp_path: Path) -> None:
    summary, weights = known.summary, known.weights
    other = process_known(make_known_survey(tmp_path / "east", district="East"), weights)
    city = tmp_path / "city"
    result = CliRunner().invoke(
        main, ["report", str(summary.out_dir), str(other.out_dir), "--out", str(city), "--json"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["n_surveys"] == 2 and written["n_buildings"] == 10
    table = pd.read_csv(city / "summary.csv", dtype={"building_id": str})
    assert list(table.columns[:3]) == ["survey", "district", "building_id"]
    assert sorted(set(table["district"])) == ["East", "centre"]
    for survey, out in (("centre", summary.out_dir), ("east", other.out_dir)):
        own = pd.read_csv(out / "summary.csv", dtype={"building_id": str})
        part = table[table["survey"] == survey].drop(columns=["survey", "district"])
        pd.testing.assert_frame_equal(part.reset_index(drop=True), own)
    merged = pyogrio.read_dataframe(city / "cracks.gpkg", layer="buildings")
    assert sorted(zip(merged["survey"], merged["building_id"])) == sorted(
        zip(table["survey"], table["building_id"])
    )
    report = parse_report(city / "report.html")
    assert len(report.rows) == 10
    html = (city / "report.html").read_text(encoding="utf-8")
    assert html.count('class="district-row"') == 2
    again = CliRunner().invoke(main, ["report", str(summary.out_dir), "--out", str(city)])
    assert again.exit_code == 2 and "--overwrite" in again.output


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------
def test_pixel_transform_recovers_the_image_transform() -> None:
    import shapely

    from cracksurvey.report.build import pixel_transform

    transform = Affine(0.004, 0.001, 10.0, 0.0005, -0.004, 6.0)
    corners = [transform @ c for c in [(0, 0), (300, 0), (300, 200), (0, 200)]]
    assert pixel_transform(shapely.Polygon(corners), 300, 200).almost_equals(transform)


def test_overview_draws_facade_only_buildings_schematically() -> None:
    import shapely

    from cracksurvey.report.figures import overview_map_svg

    items = [
        {
            "label": "A",
            "anchor": "b-0",
            "level": 2,
            "title": "A",
            "geometry": shapely.MultiPolygon([shapely.box(0, 0, 10, 5)]),
        },
        {"label": "F<1>", "anchor": "b-1", "level": None, "title": "F", "geometry": None},
    ]
    svg = overview_map_svg(items, {0: "none", 1: "slight", 2: "moderate"})
    assert svg.count("<path") == 1 and 'href="#b-0"' in svg and 'href="#b-1"' in svg
    assert "schematic" in svg and "F&lt;1&gt;" in svg
    assert "#fdae61" in svg and "#bdbdbd" in svg  # level 2 and unknown colours
    only_facades = overview_map_svg(items[1:], {0: "none"})
    assert "<path" not in only_facades and "<rect" in only_facades


def test_format_value() -> None:
    assert format_value("crack_density_m_per_m2", 0.12345) == "0.123"
    assert format_value("imaged_area_m2", 12.345) == "12.3"
    assert format_value("largest_crack_share", 1.0) == "100 %"
    assert format_value("damage_level", pd.NA) == "–"
    assert format_value("damage_label", "moderate") == "moderate"
