"""The bad-input corpus through the CLI: one clear line each, the right status, the others finish.

Per-image problems (the corpus of test_process plus a 1-band image, wrong extensions, a huge
nodata area, a malformed world file and one contradicting its raster's own transform) fail
alone: exit status 1, one ``error`` line per bad image, every good image processed. Run-level
problems (malformed images.csv or survey.yaml, weights of the wrong architecture) are refused
before any work: exit status 2, one line per problem, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import crack_array, make_geotiff, make_image, oracle_model, write_world_file
from conftest import nonblank_lines as lines
from conftest import run_cli as run
from test_cli import FAST_OPTIONS
from test_process import make_bad_input_survey

from cracksurvey.model import ModelCard, save_model

GSD = Affine(0.002, 0, 0, 0, -0.002, 64 * 0.002)


def make_corpus(root: Path) -> Path:
    """test_process's bad-input survey plus more per-image cases (module docstring)."""
    make_bad_input_survey(root)
    images = root / "images"
    make_geotiff(images / "gray.tif", crack_array((64, 64), bands=1), GSD)
    make_geotiff(images / "tiff_named.jpg", crack_array((64, 64)), GSD)  # content decides
    (images / "notes.tif").write_text("minutes of the site visit, saved as .tif by mistake")
    sparse = crack_array((128, 128), polyline=[(2, 2), (36, 30)])
    sparse[:, 40:, :] = 1
    sparse[:, :, 40:] = 1  # all but the top-left 40 x 40 px is nodata
    make_geotiff(images / "mostly_nodata.tif", sparse, GSD, nodata=1)
    make_image(images / "badworld.png", crack_array((64, 64)))
    (images / "badworld.pgw").write_text("0.002\n0\n0\n-0.002\nabc\n1\n")
    write_world_file(make_image(images / "world.png", crack_array((64, 64))), GSD)
    make_geotiff(images / "mismatched.tif", crack_array((64, 64)), GSD)
    write_world_file(images / "mismatched.tif", Affine(0.5, 0, 0, 0, -0.5, 10))
    return root


def test_per_image_problems_fail_alone_with_one_line_each(tmp_path: Path, weights: Path):
    root = make_corpus(tmp_path / "survey")
    result = run("process", root, "--weights", weights, *FAST_OPTIONS, "--json")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in lines(result.stderr) if line.startswith("error ")]
    expected = {
        "truncated.tif": "truncated",
        "corrupt.tif": "cannot be decoded",
        "empty.png": "the file is empty (0 bytes)",
        "notes.tif": "the file is corrupt or not an image",
        "badworld.png": "badworld.pgw: not a valid world file",
        "mismatched.tif": "contradicts the raster's own transform",
    }
    assert len(errors) == len(expected)
    for name, text in expected.items():
        [line] = [e for e in errors if name in e or name.replace(".png", ".pgw") in e]
        assert text in line, line
    record = json.loads(result.stdout)
    status = {i["image"]: i for i in record["images"]}
    for name in expected:
        assert status[name]["status"] == "error" and "\n" not in status[name]["message"]
    finished = {n for n, i in status.items() if i["status"] == "ok"}
    assert finished == {
        "good.tif",
        "rgba.png",
        "sixteen.tif",
        "nogeo.png",
        "gray.tif",
        "tiff_named.jpg",
        "mostly_nodata.tif",
        "world.png",
    }
    assert all(status[n]["n_cracks"] == 1 for n in finished)
    assert record["n_images_failed"] == len(expected)

    nodata = status["mostly_nodata.tif"]
    assert nodata["valid_px"] == 40 * 40  # nodata skipped, not hallucinated
    with rasterio.open(root / "cracksurvey" / nodata["mask_raster"]) as ds:
        mask = ds.read(1)
    assert (mask[40:, :] == 255).all() and (mask[:, 40:] == 255).all()


def wrong_architecture_weights(folder: Path, weights: Path) -> Path:
    """Real weights of a unet16 under a card that says unet11 (checksum right)."""
    card = ModelCard("oracle-as-unet11", "unet11", 1 / 16, True, threshold_px=4.0)
    path = folder / "mislabelled.safetensors"
    save_model(oracle_model(), card, path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("images_csv", "images.csv line 2: 3 fields but the header has 2"),
        ("survey_yaml_key", "unknown key"),
        ("survey_yaml_syntax", "survey.yaml"),
        ("weights", "weights do not match the card's architecture (unet11"),
    ],
)
def test_run_level_problems_are_refused_with_one_line(
    tmp_path: Path, weights: Path, case: str, message: str
):
    root = tmp_path / "survey"
    make_geotiff(root / "images" / "a.tif", crack_array(), GSD)
    options: list[str | Path] = ["--weights", weights]
    if case == "images_csv":
        (root / "images.csv").write_text("image,building_id\na.tif,B1,extra\n")
    elif case == "survey_yaml_key":
        (root / "survey.yaml").write_text("tiling:\n  tile_size: 512\n")
    elif case == "survey_yaml_syntax":
        (root / "survey.yaml").write_text("tiling: [unclosed\n")
    else:
        options = ["--weights", wrong_architecture_weights(tmp_path, weights)]
    result = run("process", root, *options, *FAST_OPTIONS)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    problem_lines = [line for line in lines(result.stderr) if message in line]
    assert len(problem_lines) == 1, result.stderr
    assert not (root / "cracksurvey" / "run.json").exists()
    assert not np.any([p.suffix == ".gpkg" for p in root.rglob("*")])
