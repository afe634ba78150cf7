"""The shipped example survey (examples/survey): valid, small, and reproducible by its script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from shapely.geometry import Point, box

from cracksurvey.georef import facade_to_world
from cracksurvey.io.survey_files import discover_survey

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SURVEY = EXAMPLES / "survey"
SCRIPT = EXAMPLES / "make_example.py"
OUTPUT_DIR = "cracksurvey"  # default output folder of `cracksurvey process`, git-ignored

EXPECTED = {  # image: (georef kind, building_id, facade_id, gsd_mm)
    "B01_map_ortho.tif": ("map", "B01", None, 5.0),
    "B01_south_facade.jpg": ("facade_world", "B01", "B01-south", 5.0),
    "B02_east_facade.jpg": ("facade", "B02", "B02-east", 4.0),
    "B02_north_facade.jpg": ("facade", "B02", "B02-north", 3.0),
}


def _shared_data() -> Path | None:
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "masonry_dais2021" / "splits.csv").is_file():
            return candidate
    return None


def _survey_files(root: Path) -> dict[str, Path]:
    """Files of a survey directory by relative path, without the process outputs."""
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != OUTPUT_DIR
    }


@pytest.fixture(scope="module")
def survey():
    return discover_survey(SURVEY)


def test_example_survey_discovers_cleanly(survey):
    assert survey.config.survey.crs == "EPSG:32633"
    assert survey.images_csv_path is not None and survey.survey_yaml_path is not None
    assert [r.status for r in survey.images] == ["ok"] * len(EXPECTED), [
        r.message for r in survey.failed_images
    ]
    assert all(not r.warnings for r in survey.images)
    found = {
        r.name: (r.georef.kind, r.building_id, r.facade_id, round(r.georef.pixel_size_m * 1000, 6))
        for r in survey.images
    }
    assert found == EXPECTED


def test_example_covers_the_three_georeferencing_cases(survey):
    kinds = {r.georef.kind for r in survey.images}
    assert {"map", "facade", "facade_world"} <= kinds
    east = next(r for r in survey.images if r.name == "B02_east_facade.jpg")
    assert "world file" in east.georef.source  # case 2 from a world file, not only a gsd
    assert (east.path.with_suffix(".jgw")).is_file()
    assert any(max(r.width, r.height) > 4000 for r in survey.images)


def test_example_geometry_is_consistent_with_the_footprints(survey):
    buildings = survey.buildings
    assert buildings is not None and buildings.crs.to_epsg() == 32633
    assert sorted(buildings["building_id"]) == ["B01", "B02"]
    footprint = dict(zip(buildings["building_id"], buildings.geometry))

    ortho = next(r for r in survey.images if r.georef.kind == "map")
    left, top = ortho.georef.transform @ (0, 0)
    right, bottom = ortho.georef.transform @ (ortho.width, ortho.height)
    assert footprint[ortho.building_id].contains(box(left, bottom, right, top))

    placed = next(r for r in survey.images if r.georef.kind == "facade_world")
    plane = placed.georef.plane
    width_m = placed.width * placed.georef.pixel_size_m
    assert plane.length_m == pytest.approx(width_m)  # the image spans the whole base line
    x, y, _ = facade_to_world([0.0, width_m], [0.0, 0.0], plane)
    outline = footprint[placed.building_id].exterior
    assert all(outline.distance(Point(px, py)) < 1e-6 for px, py in zip(x, y))


def test_example_is_small_and_attributed():
    files = _survey_files(SURVEY)
    assert sum(p.stat().st_size for p in files.values()) < 8_000_000
    attribution = (SURVEY / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "GPL-3.0" in attribution and "10.1016/j.autcon.2021.103606" in attribution
    assert "synthetic mosaic" in attribution
    for name in EXPECTED:
        assert f"`{name}`" in attribution


def test_make_example_reproduces_the_committed_files(tmp_path):
    data = _shared_data()
    if data is None:
        pytest.skip(
            "source data absent (neither ../shared/data next to the repo nor /work/shared/data "
            "holds masonry_dais2021/); cannot regenerate examples/survey"
        )
    out = tmp_path / "survey"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    made, committed = _survey_files(out), _survey_files(SURVEY)
    assert sorted(made) == sorted(committed)
    differ = [name for name in made if made[name].read_bytes() != committed[name].read_bytes()]
    assert not differ, (
        f"examples/make_example.py no longer reproduces {differ}; if the change is intended "
        "(or the JPEG/GDAL encoder changed), run `python examples/make_example.py --data "
        "../shared/data` and commit examples/survey"
    )
