"""The ``cracksurvey process`` command: help, one-line results and errors, exit codes, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_survey
from conftest import nonblank_lines as lines
from conftest import run_cli as run
from test_process import make_bad_input_survey

from cracksurvey.cli import main
from cracksurvey.errors import ConfigError

FAST_OPTIONS = [
    "--scheduler",
    "synchronous",
    "--precision",
    "fp32",
    "--set",
    "tiling.halo_px=64",
    "--tile-px",
    "160",
    "--set",
    "cpp.patch_px=16",
]


def test_help_explains_inputs_and_outputs() -> None:
    result = run("process", "--help")
    assert result.exit_code == 0
    for text in (
        "SURVEY_DIR",
        "images.csv",
        "buildings.gpkg",
        "cracks.gpkg",
        "run.json",
        "summary.csv",
        "_distance.tif",
        "--overwrite",
        "--scheduler",
        "--workers",
        "--tile-px",
        "--threshold-px",
        "[auto|bf16|fp32]",
        "--json",
        "Exit status",
    ):
        assert text in result.output, text
    assert "[default: (1280)" in " ".join(result.output.split())
    assert "process" in run("--help").output


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys, cracksurvey.cli; "
        "print(sorted(m for m in ('torch', 'dask', 'geopandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_process_a_survey(tmp_path: Path, weights: Path) -> None:
    root = make_survey(tmp_path / "survey")
    result = run("process", root, "--weights", weights, *FAST_OPTIONS, "--json")
    assert result.exit_code == 0, result.stderr
    err = lines(result.stderr)
    assert sorted(line.split(":")[0] for line in err if line.startswith("ok ")) == [
        f"ok    images/{name}"
        for name in (
            "drone.png",
            "facade_gsd.jpg",
            "facade_plane.png",
            "facade_world.png",
            "ortho.tif",
        )
    ]
    assert err[-1].startswith("5 of 5 images processed; 5 cracks -> ")
    record = json.loads(result.stdout)
    assert record == json.loads((root / "cracksurvey" / "run.json").read_text())
    assert record["config"]["tiling"] == {"tile_px": 160, "halo_px": 64, "border": "image"}
    assert record["config"]["model"]["precision"] == "fp32"
    assert record["config"]["cpp"]["patch_px"] == 16


def test_bad_inputs_exit_1_with_one_line_each(tmp_path: Path, weights: Path) -> None:
    root = make_bad_input_survey(tmp_path / "survey")
    result = run("process", root, "--weights", weights, *FAST_OPTIONS)
    assert result.exit_code == 1
    err = lines(result.stderr)
    errors = [line for line in err if line.startswith("error ")]
    assert len(errors) == 3
    for name in ("truncated.tif", "empty.png", "corrupt.tif"):
        assert sum(name in line for line in errors) == 1, name
    warnings = [line for line in err if line.startswith("warning: ")]
    assert any("images/nogeo.png" in w and "pixel units" in w for w in warnings)
    assert sum(line.startswith("ok ") for line in err) == 4
    assert "4 of 7 images processed, 3 failed" in err[-1]
    assert "Traceback" not in result.stderr


def test_malformed_images_csv_exit_2_one_line(tmp_path: Path, weights: Path) -> None:
    root = make_survey(tmp_path / "survey")
    (root / "images.csv").write_text("image;building_id\northo.tif;B1;oops\n")
    result = run("process", root, "--weights", weights, *FAST_OPTIONS)
    assert result.exit_code == 2
    assert lines(result.stderr) == [
        f"error: {root / 'images.csv'} line 2: 3 fields but the header has 2; check the "
        "delimiters and quoting of that line"
    ]
    assert not (root / "cracksurvey").exists()
    verbose = CliRunner().invoke(main, ["-v", "process", str(root), "--weights", str(weights)])
    assert isinstance(verbose.exception, ConfigError)  # -v: the traceback is not hidden


def test_previous_run_exit_2_unless_overwrite(tmp_path: Path, weights: Path) -> None:
    root = make_survey(tmp_path / "survey")
    out = tmp_path / "out"
    assert run("process", root, "--out", out, "--weights", weights, *FAST_OPTIONS).exit_code == 0
    again = run("process", root, "--out", out, "--weights", weights, *FAST_OPTIONS)
    assert again.exit_code == 2
    assert lines(again.stderr) == [
        f"error: {out} already holds a previous run (run.json); pass --overwrite to replace it "
        "or choose another --out"
    ]
    forced = run(
        "process", root, "--out", out, "--weights", weights, *FAST_OPTIONS, "--overwrite", "-q"
    )
    assert forced.exit_code == 0
    assert forced.stderr == ""  # -q: no per-image lines, no summary line


def test_no_default_model_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import cracksurvey.model

    missing = tmp_path / "weights" / "default.safetensors"
    monkeypatch.setattr(cracksurvey.model, "default_weights_path", lambda: missing)
    root = make_survey(tmp_path / "survey")
    result = run("process", root, *FAST_OPTIONS)
    assert result.exit_code == 2
    [line] = lines(result.stderr)
    assert line.startswith("error: no default model is shipped yet") and "--weights" in line


def test_weights_not_matching_their_card(tmp_path: Path, weights: Path) -> None:
    card = json.loads(weights.with_suffix(".json").read_text())
    card["width"] = 0.125
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(weights.read_bytes())
    bad.with_suffix(".json").write_text(json.dumps(card))
    root = make_survey(tmp_path / "survey")
    result = run("process", root, "--weights", bad, *FAST_OPTIONS)
    assert result.exit_code == 2
    [line] = lines(result.stderr)
    assert "weights do not match the card's architecture" in line and str(bad) in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "tiling.tile_size=512"], "unknown key 'tiling.tile_size'"),
        (["--set", "tile_px"], "is not of the form section.key=value"),
        (["--precision", "fp16"], "Invalid value for '--precision'"),
        (["--workers", "0"], "Invalid value for '--workers'"),
    ],
)
def test_usage_and_config_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    root = make_survey(tmp_path / "survey")
    result = run("process", root, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_same_warning_for_many_images_is_one_line(tmp_path: Path, weights: Path) -> None:
    import geopandas as gpd
    import pyogrio
    from conftest import crack_array, make_image

    root = tmp_path / "survey"
    names = [f"images/wall{i}.png" for i in range(5)]
    for name in names:  # no world file, no gsd: pixel units, one warning each
        make_image(root / name, crack_array())
    result = run("process", root, "--weights", weights, *FAST_OPTIONS)
    assert result.exit_code == 0, result.stderr
    [line] = [x for x in lines(result.stderr) if "georeferencing" in x]
    assert line.startswith(
        "warning: 5 images (images/wall0.png, images/wall1.png, images/wall2.png and 2 more): "
        "no georeferencing"
    )
    assert "pixel units" in line
    gpkg = root / "cracksurvey" / "cracks.gpkg"
    assert "images" in [name for name, _ in pyogrio.list_layers(gpkg)]
    images = gpd.read_file(gpkg, layer="images", engine="pyogrio")
    for name, warning in zip(images["image"], images["warnings"]):  # each keeps its own
        assert warning.startswith(f"images/{name}: no georeferencing"), warning
    assert len(images) == 5


def test_warning_lines_group_by_what_and_keep_single_ones() -> None:
    from cracksurvey.cli.process import _WarningLines

    written: list[str] = []
    grouped = _WarningLines(written.append)
    grouped.add("a.png: no georeferencing")
    grouped.add("gap bridging is not implemented")
    grouped.add("b.png: no georeferencing")
    grouped.add("c.png: only one like this")
    assert written == []  # held until flushed
    grouped.flush()
    assert written == [
        "warning: 2 images (a.png, b.png): no georeferencing",
        "warning: gap bridging is not implemented",
        "warning: c.png: only one like this",
    ]
    grouped.flush()
    assert len(written) == 3
