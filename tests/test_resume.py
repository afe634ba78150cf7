"""Resume and idempotence: the per-image cache, kill -9 and rerun, full disk, unwritable output.

The oracle model of test_process makes the engine exact (a drawn crack is the mask), so the
layers of two runs can be compared feature by feature, bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from affine import Affine
from conftest import FAST, crack_array, make_geotiff, make_survey, write_images_csv

from cracksurvey.errors import OutputWriteError
from cracksurvey.io.cache import CACHE_DIR, ImageCache
from cracksurvey.process import process_survey

pytestmark = pytest.mark.filterwarnings("ignore:.*not assigned to a building")

#: Columns that measure time, not results.
TIMING_COLUMNS = ("seconds",)


def read_layers(gpkg: Path, *, drop: tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
    """Every feature layer of a GeoPackage as a plain frame, geometry as WKB bytes (exact)."""
    layers = {}
    for name, _ in pyogrio.list_layers(gpkg):
        frame = gpd.read_file(gpkg, layer=name, engine="pyogrio")
        if not isinstance(frame, gpd.GeoDataFrame):  # layer_styles: presentation, timestamped
            continue
        table = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        table["wkb"] = shapely.to_wkb(np.asarray(frame.geometry.values), output_dimension=3)
        layers[name] = table.drop(columns=[c for c in drop if c in table.columns])
    return layers


def assert_same_layers(a: Path, b: Path, *, drop: tuple[str, ...] = (), rtol: float = 0.0):
    """Same layer names, columns, features and values (floats within ``rtol``, else exact)."""
    left, right = read_layers(a, drop=drop), read_layers(b, drop=drop)
    assert sorted(left) == sorted(right)
    for name in left:
        x, y = left[name], right[name]
        assert list(x.columns) == list(y.columns), name
        assert len(x) == len(y), name
        for column in x.columns:
            if column != "wkb" and pd.api.types.is_float_dtype(x[column]):
                np.testing.assert_allclose(x[column], y[column], rtol=rtol, err_msg=name)
            elif column == "wkb" and rtol:
                np.testing.assert_allclose(
                    shapely.get_coordinates(shapely.from_wkb(x[column])),
                    shapely.get_coordinates(shapely.from_wkb(y[column])),
                    rtol=rtol,
                )
            else:
                assert x[column].tolist() == y[column].tolist(), (name, column)


def entries(out: Path) -> dict[str, int]:
    """Committed cache entries: key -> mtime (ns) of their manifest."""
    root = out / CACHE_DIR
    return {
        p.name: (p / "entry.json").stat().st_mtime_ns
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def make_slow_survey(root: Path, n: int = 6, size: int = 160) -> Path:
    """``n`` façade images of ``size`` px, each with its own crack (25 tiles at core 32 px)."""
    gsd = Affine(0.002, 0, 0, 0, -0.002, size * 0.002)
    rows = []
    for i in range(n):
        polyline = [(5 + 7 * i, 4), (size // 2, size // 2 - 3 * i), (size - 6, size - 10 - i)]
        make_geotiff(
            root / "images" / f"wall{i}.tif", crack_array((size, size), polyline=polyline), gsd
        )
        rows.append({"image": f"wall{i}.tif", "building_id": f"B{i % 2}", "facade_id": f"F{i}"})
    write_images_csv(root / "images.csv", rows)
    return root


# --------------------------------------------------------------------------------------------
# Idempotence
# --------------------------------------------------------------------------------------------
def test_rerun_recomputes_nothing_and_gives_identical_layers(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    first = process_survey(root, weights=weights, overrides=FAST, synchronous=True)
    out = first.out_dir
    before = entries(out)
    assert len(before) == 5 and run_json(out)["cache"]["reused"] == []
    gpkg_copy = tmp_path / "first.gpkg"
    gpkg_copy.write_bytes(first.gpkg_path.read_bytes())

    again = process_survey(root, weights=weights, overrides=FAST, synchronous=True, overwrite=True)
    cache = run_json(out)["cache"]
    assert cache["computed"] == [] and sorted(cache["reused"]) == sorted(
        i.image for i in first.images
    )
    assert entries(out) == before  # not rewritten
    assert_same_layers(gpkg_copy, again.gpkg_path)  # timings included: they come from the cache
    rasters = sorted(p.name for p in (out / "rasters").iterdir())
    assert len(rasters) == 15 and all((out / "rasters" / r).stat().st_nlink == 2 for r in rasters)


def test_key_follows_input_model_and_config(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    out = process_survey(root, weights=weights, overrides=FAST, synchronous=True).out_dir
    keys = set(entries(out))

    make_geotiff(
        root / "images" / "ortho.tif",
        crack_array(polyline=[(0, 31), (23, 0)]),
        Affine(0.05, 0, 368_000.0, 0, -0.05, 4_685_000.0),
        "EPSG:32633",
    )
    process_survey(root, weights=weights, overrides=FAST, synchronous=True, overwrite=True)
    assert run_json(out)["cache"]["computed"] == ["ortho.tif"]  # only the changed image
    assert len(set(entries(out)) - keys) == 1 and len(entries(out)) == 5  # old entry pruned

    longer = {**FAST, "vectorize": {"min_crack_length_px": 5}}
    process_survey(root, weights=weights, overrides=longer, synchronous=True, overwrite=True)
    assert len(run_json(out)["cache"]["computed"]) == 5

    process_survey(
        root, weights=weights, overrides=longer, synchronous=True, overwrite=True, use_cache=False
    )
    assert len(run_json(out)["cache"]["computed"]) == 5  # --no-cache


def test_measurement_settings_reuse_the_predictions(tmp_path: Path, weights: Path):
    """Vectorize, CPP and damage settings only remeasure; the tiling or threshold repredict."""
    root = make_survey(tmp_path / "survey")
    out = process_survey(root, weights=weights, overrides=FAST, synchronous=True).out_dir
    names = sorted(run_json(out)["cache"]["predictions"]["computed"])
    assert len(names) == 5
    rasters = {p.name: p.stat().st_ino for p in (out / "rasters").iterdir()}

    measured = {
        **FAST,
        "vectorize": {"min_spur_px": 3},
        "cpp": {"patch_px": 8},
        "damage": {"scale": "default"},
    }
    process_survey(root, weights=weights, overrides=measured, synchronous=True, overwrite=True)
    cache = run_json(out)["cache"]
    assert sorted(cache["computed"]) == names and cache["predictions"]["computed"] == []
    assert sorted(cache["predictions"]["reused"]) == names
    assert {p.name: p.stat().st_ino for p in (out / "rasters").iterdir()} == rasters

    for changed in (
        {"tiling": {"tile_px": 192, "halo_px": 64}},
        {"model": {"precision": "fp32", "threshold_px": 3.0}},
    ):
        process_survey(
            root, weights=weights, overrides={**FAST, **changed}, synchronous=True, overwrite=True
        )
        assert sorted(run_json(out)["cache"]["predictions"]["computed"]) == names


def test_what_auto_precision_resolves_to_is_part_of_the_key(
    tmp_path: Path, weights: Path, monkeypatch
):
    """The same `precision: auto` on another CPU kind (or CRACKSURVEY_PRECISION) repredicts."""
    from cracksurvey.predict import PRECISION_ENV

    root = make_survey(tmp_path / "survey")
    auto = {**FAST, "model": {"precision": "auto"}}
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    out = process_survey(root, weights=weights, overrides=auto, synchronous=True).out_dir
    names = sorted(run_json(out)["cache"]["predictions"]["computed"])
    process_survey(root, weights=weights, overrides=auto, synchronous=True, overwrite=True)
    assert sorted(run_json(out)["cache"]["predictions"]["reused"]) == names
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    process_survey(root, weights=weights, overrides=auto, synchronous=True, overwrite=True)
    assert sorted(run_json(out)["cache"]["predictions"]["computed"]) == names


def test_other_code_recomputes(tmp_path: Path, weights: Path, monkeypatch):
    """A source checkout at another commit has the same version number but other code: its
    predictions and results are not reused."""
    from cracksurvey.io import cache

    root = make_survey(tmp_path / "survey")
    out = process_survey(root, weights=weights, overrides=FAST, synchronous=True).out_dir
    names = sorted(run_json(out)["cache"]["predictions"]["computed"])
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "f" * 64)
    process_survey(root, weights=weights, overrides=FAST, synchronous=True, overwrite=True)
    assert sorted(run_json(out)["cache"]["predictions"]["computed"]) == names
    assert sorted(run_json(out)["cache"]["computed"]) == names


def test_source_fingerprint_follows_every_source_file(tmp_path: Path):
    from cracksurvey.io.cache import code_fingerprint, source_fingerprint

    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    first = source_fingerprint(tmp_path / "pkg")
    (tmp_path / "pkg" / "notes.txt").write_text("still not code")
    assert source_fingerprint(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
    edited = source_fingerprint(tmp_path / "pkg")
    assert edited != first
    (tmp_path / "pkg" / "sub" / "b.py").rename(tmp_path / "pkg" / "c.py")  # same bytes, moved
    assert source_fingerprint(tmp_path / "pkg") not in (first, edited)
    assert len(code_fingerprint()) == 64 and code_fingerprint() == code_fingerprint()


def test_half_written_or_damaged_entries_are_recomputed(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    first = process_survey(root, weights=weights, overrides=FAST, synchronous=True)
    out = first.out_dir
    keys = sorted(entries(out))
    (out / CACHE_DIR / keys[0] / "entry.json").unlink()  # killed before the manifest
    with open(out / CACHE_DIR / keys[1] / "layers.npz", "r+b") as f:  # torn write
        f.truncate(100)
    staging = out / CACHE_DIR / ".staging-0123"  # killed while computing
    staging.mkdir()
    (staging / "distance.tif").write_bytes(b"half")
    (out / "run.json").unlink()  # as after a kill: the rerun needs no --overwrite

    process_survey(root, weights=weights, overrides=FAST, synchronous=True)
    assert len(run_json(out)["cache"]["computed"]) == 2
    assert not staging.exists() and sorted(entries(out)) == keys
    assert ImageCache(out).lookup(keys[0]) is not None


def test_damaged_predictions_are_recomputed(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    out = process_survey(root, weights=weights, overrides=FAST, synchronous=True).out_dir
    predictions = out / CACHE_DIR / ".predictions"
    keys = sorted(p.name for p in predictions.iterdir() if not p.name.startswith("."))
    assert len(keys) == 5
    with open(predictions / keys[0] / "skeleton.npz", "r+b") as f:  # torn write
        f.truncate(10)
    (predictions / keys[1] / "entry.json").unlink()  # killed before the manifest
    (out / "run.json").unlink()

    process_survey(root, weights=weights, overrides=FAST, synchronous=True)
    cache = run_json(out)["cache"]
    assert len(cache["predictions"]["computed"]) == 2 and len(cache["predictions"]["reused"]) == 3
    assert sorted(p.name for p in predictions.iterdir() if not p.name.startswith(".")) == keys


# --------------------------------------------------------------------------------------------
# kill -9 and resume
# --------------------------------------------------------------------------------------------
def cli_command(root: Path, out: Path, weights: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from cracksurvey.cli import main; main()",
        "process",
        str(root),
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--scheduler",
        "synchronous",
        "--precision",
        "fp32",
        "--tile-px",
        "160",
        "--set",
        "tiling.halo_px=64",
        "--set",
        "cpp.patch_px=16",
        "--set",
        "cpp.min_area_px=3",
        "-q",
    ]


def test_sigkill_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path: Path, weights: Path):
    root = make_slow_survey(tmp_path / "survey")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = cli_command(root, out, weights)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not (out / CACHE_DIR).is_dir() or len(entries(out)) < 2) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finished = entries(out)
    assert 2 <= len(finished) < 6 and not (out / "run.json").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    cache = run_json(out)["cache"]
    assert len(cache["reused"]) == len(finished)
    assert len(cache["computed"]) == 6 - len(finished)
    assert {k: v for k, v in entries(out).items() if k in finished} == finished  # untouched

    reference = process_survey(
        root,
        out_dir=tmp_path / "reference",
        weights=weights,
        overrides={**FAST, "cpp": {"patch_px": 16, "min_area_px": 3}},
        synchronous=True,
    )
    assert reference.n_cracks == 6
    assert_same_layers(out / "cracks.gpkg", reference.gpkg_path, drop=TIMING_COLUMNS)
    assert (out / "summary.csv").read_text() == reference.out_dir.joinpath(
        "summary.csv"
    ).read_text()


# --------------------------------------------------------------------------------------------
# Full disk, unwritable output folder
# --------------------------------------------------------------------------------------------
def test_full_disk_is_one_error_and_keeps_finished_images(
    tmp_path: Path, weights: Path, monkeypatch
):
    root = make_survey(tmp_path / "survey")
    out = tmp_path / "out"
    commit = ImageCache.commit
    calls = []

    def commit_until_full(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(ImageCache, "commit", commit_until_full)
    with pytest.raises(OutputWriteError) as error:
        process_survey(root, out_dir=out, weights=weights, overrides=FAST, synchronous=True)
    message = str(error.value)
    assert "No space left on device" in message and "the 2 images finished" in message
    assert "rerun the same command" in message and "\n" not in message
    assert len(entries(out)) == 2 and not (out / "run.json").exists()
    assert not [p for p in (out / CACHE_DIR).iterdir() if p.name.startswith(".staging")]

    monkeypatch.setattr(ImageCache, "commit", commit)
    process_survey(root, out_dir=out, weights=weights, overrides=FAST, synchronous=True)
    cache = run_json(out)["cache"]
    assert len(cache["reused"]) == 2 and len(cache["computed"]) == 3


def test_gdal_write_error_without_errno_is_recognised(tmp_path: Path):
    from rasterio.errors import RasterioIOError

    from cracksurvey.process.run import output_failure

    gdal = RasterioIOError("Write error: wrote 0 bytes: No space left on device")
    assert isinstance(output_failure(gdal, tmp_path, 1), OutputWriteError)
    denied_input = PermissionError(errno.EACCES, "Permission denied", "/elsewhere/a.tif")
    assert output_failure(denied_input, tmp_path, 1) is None  # an input problem: per image
    denied_output = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    assert isinstance(output_failure(denied_output, tmp_path, 1), OutputWriteError)


def test_unwritable_output_folder_is_one_clear_cli_error(tmp_path: Path, weights: Path):
    from click.testing import CliRunner

    from cracksurvey.cli import main

    root = make_survey(tmp_path / "survey")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        main,
        [
            "process",
            str(root),
            "--out",
            str(blocker / "out"),
            "--weights",
            str(weights),
            "--scheduler",
            "synchronous",
        ],
    )
    assert result.exit_code == 2
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: {blocker / 'out'}: the output folder cannot be written")
