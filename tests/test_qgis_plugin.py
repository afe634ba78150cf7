"""The QGIS Processing provider (qgis_plugin/cracksurvey_processing) gives what the CLI gives.

QGIS itself (headless, Debian's bindings and Processing plugin; skipped, saying why, without
them) finds the plugin folder, starts it as it starts any Processing plugin, and runs
cracksurvey:process, cracksurvey:report and cracksurvey:finetune through ``processing.run``.
The plugin runs the ``cracksurvey`` executable (here a wrapper of this checkout's CLI, given by
``CRACKSURVEY_EXECUTABLE``); its outputs must equal those of the same command run directly.
The runner's parts that need no QGIS (executable lookup, progress parsing) are tested here too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from conftest import FAST, crack_array, make_image, make_survey, save_oracle
from gis_helpers import run_qgis_script

REPO = Path(__file__).resolve().parents[1]
PLUGIN_ROOT = REPO / "qgis_plugin"
SCRIPT = Path(__file__).with_name("qgis_processing.py")
_spec = importlib.util.spec_from_file_location(
    "cracksurvey_processing_runner", PLUGIN_ROOT / "cracksurvey_processing" / "runner.py"
)
assert _spec is not None and _spec.loader is not None
runner = importlib.util.module_from_spec(_spec)  # the plugin's QGIS-free module
_spec.loader.exec_module(runner)

#: The oracle's fast settings as command-line options (one process, small tiles).
FAST_ARGS = [
    "--scheduler",
    "synchronous",
    *[
        a
        for section, values in FAST.items()
        for key, value in values.items()
        for a in ("--set", f"{section}.{key}={value}")
    ],
]
FINETUNE_ARGS = ["--threads", "1"]
WALL = (96, 128)  # a façade image large enough for 32 px crops


def cli_executable(tmp: Path) -> Path:
    """A `cracksurvey` executable running this checkout with the test's Python."""
    script = tmp / "cracksurvey"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -c '
        f'"from cracksurvey.cli import main; main()" "$@"\n'
    )
    script.chmod(0o755)
    return script


def run_cli_subprocess(executable: Path, *args: str | Path) -> dict:
    result = subprocess.run(
        [str(executable), *map(str, args), "--json"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def add_reviewed(out: Path) -> None:
    """The same correction in both outputs: the wall façade's top half reviewed."""
    gpkg = out / "cracks.gpkg"
    layer = next(n for n, _ in pyogrio.list_layers(gpkg) if n.startswith("cracks_facade_wall"))
    crs = pyogrio.read_info(gpkg, layer=layer)["crs"]
    frame = gpd.GeoDataFrame(
        {"note": ["checked"]}, geometry=[shapely.box(0, 0.1, 0.256, 0.192)], crs=crs
    )
    pyogrio.write_dataframe(frame, gpkg, layer="reviewed", geometry_type="Polygon")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each algorithm through QGIS, and the same command run directly."""
    base = tmp_path_factory.mktemp("plugin")
    survey = make_survey(base / "survey")
    make_image(
        survey / "images" / "wall.png",
        np.minimum(
            crack_array(WALL, polyline=[(20, 10), (20, 100)]),
            crack_array(WALL, polyline=[(10, 110), (80, 110)]),
        ),
    )
    with open(survey / "images.csv", "a", encoding="utf-8") as f:
        f.write("wall.png,B1,wall,2,,,,,\n")
    weights = save_oracle(base)
    executable = cli_executable(base)
    qgis, cli = base / "qgis", base / "cli"

    direct = {
        "process": run_cli_subprocess(
            executable, "process", survey, "--out", cli / "out", "--weights", weights, *FAST_ARGS
        )
    }
    direct["report"] = run_cli_subprocess(executable, "report", cli / "out", "--out", cli / "city")
    extra = " ".join(FAST_ARGS)
    steps = [
        {
            "algorithm": "cracksurvey:process",
            "parameters": {
                "INPUT": str(survey),
                "OUTPUT": str(qgis / "out"),
                "WEIGHTS": str(weights),
                "EXTRA": extra,
            },
        },
        {
            "algorithm": "cracksurvey:report",
            "parameters": {
                "INPUT": [str(qgis / "out" / "cracks.gpkg")],
                "OUTPUT": str(qgis / "city"),
            },
        },
    ]
    (base / "runs.json").write_text(json.dumps({"plugins": str(PLUGIN_ROOT), "runs": steps}))
    env = {"CRACKSURVEY_EXECUTABLE": str(executable)}
    seen = run_qgis_script(SCRIPT, base / "runs.json", env=env)

    for out in (qgis / "out", cli / "out"):
        add_reviewed(out)
    direct["finetune"] = run_cli_subprocess(
        executable,
        "finetune",
        cli / "out",
        "--run",
        cli / "run",
        "--weights",
        weights,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--crop-px",
        "32",
        *FINETUNE_ARGS,
    )
    finetune = {
        "algorithm": "cracksurvey:finetune",
        "parameters": {
            "INPUT": [str(qgis / "out" / "cracks.gpkg")],
            "OUTPUT": str(qgis / "run"),
            "WEIGHTS": str(weights),
            "STEPS": 2,
            "BATCH_SIZE": 2,
            "CROP_PX": 32,
            "EXTRA": " ".join(FINETUNE_ARGS),
        },
    }
    unsaved = {
        **finetune,
        "parameters": {**finetune["parameters"], "OUTPUT": str(qgis / "unsaved")},
        "unsaved_edit": f"{qgis / 'out' / 'cracks.gpkg'}|layername=cracks_facade_wall",
    }
    (base / "runs.json").write_text(
        json.dumps({"plugins": str(PLUGIN_ROOT), "runs": [finetune, unsaved]})
    )
    later = run_qgis_script(SCRIPT, base / "runs.json", env=env)
    seen["runs"] += later["runs"]
    return {"qgis": qgis, "cli": cli, "seen": seen, "direct": direct}


def _layers_equal(a: Path, b: Path) -> list[str]:
    names = [n for n, kind in pyogrio.list_layers(a) if kind]
    assert names == [n for n, kind in pyogrio.list_layers(b) if kind]
    for name in names:
        left, right = pyogrio.read_dataframe(a, layer=name), pyogrio.read_dataframe(b, layer=name)
        timing = [c for c in ("geometry", "seconds") if c in left]  # the run's own time
        pd.testing.assert_frame_equal(
            left.drop(columns=timing), right.drop(columns=timing), obj=name
        )
        assert left.geometry.geom_equals_exact(right.geometry, tolerance=0).all(), name
        assert left.crs == right.crs, name
    return names


def test_the_provider_is_installed_with_three_algorithms_and_help(runs) -> None:
    algorithms = runs["seen"]["algorithms"]
    assert set(algorithms) == {"cracksurvey:process", "cracksurvey:report", "cracksurvey:finetune"}
    for algorithm in algorithms.values():
        assert len(algorithm["help"]) > 200
        assert all(p["description"] for p in algorithm["parameters"].values())
        assert algorithm["parameters"]["EXTRA"]["advanced"]
        assert algorithm["parameters"]["OUTPUT"]["type"] == "folderDestination"
    process = algorithms["cracksurvey:process"]["parameters"]
    assert process["INPUT"]["type"] == "file" and process["WEIGHTS"]["optional"]
    assert process["OUTPUT"]["optional"]  # skipped: SURVEY/cracksurvey, as on the command line
    assert algorithms["cracksurvey:finetune"]["parameters"]["INPUT"]["type"] == "multilayer"


def test_process_in_qgis_equals_the_cli(runs) -> None:
    run = runs["seen"]["runs"][0]
    assert run["error"] is None, run["log"]
    qgis, cli = runs["qgis"] / "out", runs["cli"] / "out"
    assert run["results"]["GEOPACKAGE"] == str(qgis / "cracks.gpkg")
    assert run["results"]["N_CRACKS"] == str(runs["direct"]["process"]["n_cracks"])
    names = _layers_equal(qgis / "cracks.gpkg", cli / "cracks.gpkg")
    written = [n for n in names if n != "reviewed"]  # added later for the fine-tune
    assert run["load"] == sorted(written)  # every layer is loaded into the project
    assert (qgis / "summary.csv").read_text() == (cli / "summary.csv").read_text()
    rasters = sorted(p.name for p in (cli / "rasters").glob("*.tif"))
    assert rasters == sorted(p.name for p in (qgis / "rasters").glob("*.tif"))
    record = json.loads((qgis / "run.json").read_text())
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in record["images"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in runs["direct"]["process"]["images"]
    ]
    assert any(line.startswith("ok ") for line in run["log"])  # per-image lines in the log
    assert run["progress"] and run["progress"][-1] == 100.0


def test_report_in_qgis_equals_the_cli(runs) -> None:
    run = runs["seen"]["runs"][1]
    assert run["error"] is None, run["log"]
    qgis, cli = runs["qgis"] / "city", runs["cli"] / "city"
    assert run["results"]["REPORT"] == str(qgis / "report.html")
    assert (qgis / "summary.csv").read_text() == (cli / "summary.csv").read_text()
    names = _layers_equal(qgis / "cracks.gpkg", cli / "cracks.gpkg")
    assert run["load"] == sorted(names)


def test_finetune_in_qgis_equals_the_cli(runs) -> None:
    run = runs["seen"]["runs"][2]
    assert run["error"] is None, run["log"]
    qgis, cli = runs["qgis"] / "run", runs["cli"] / "run"
    assert run["results"]["MODEL"] == str(qgis / "model.safetensors")

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest(qgis / "model.safetensors") == digest(cli / "model.safetensors")
    left, right = (json.loads((d / "model.json").read_text())["lineage"] for d in (qgis, cli))
    assert left["samples"] == right["samples"] and left["samples"]["reviewed_px"] > 0
    targets = sorted(p.relative_to(cli) for p in cli.glob("samples/*/*_target.tif"))
    assert targets == sorted(p.relative_to(qgis) for p in qgis.glob("samples/*/*_target.tif"))
    assert all(digest(qgis / t) == digest(cli / t) for t in targets)
    assert run["load"] == ["target survey/wall"]  # what training saw, as a raster


def test_finetune_in_qgis_refuses_unsaved_edits(runs) -> None:
    run = runs["seen"]["runs"][3]
    assert run["error"] is not None
    assert any("layer cracks has unsaved edits; save them first" in line for line in run["log"])
    assert not (runs["qgis"] / "unsaved" / "model.safetensors").exists()


# --------------------------------------------------------------------------------------------
# The runner, without QGIS


class Feedback:
    def __init__(self) -> None:
        self.progress: list[float] = []
        self.log: list[tuple[str, str]] = []

    def setProgress(self, value: float) -> None:  # noqa: N802
        self.progress.append(value)

    def pushInfo(self, text: str) -> None:  # noqa: N802
        self.log.append(("info", text))

    def pushWarning(self, text: str) -> None:  # noqa: N802
        self.log.append(("warning", text))

    def pushCommandInfo(self, text: str) -> None:  # noqa: N802
        self.log.append(("command", text))

    def reportError(self, text: str, fatal: bool = False) -> None:  # noqa: N802
        self.log.append(("error", text))

    def isCanceled(self) -> bool:  # noqa: N802
        return False


def test_progress_follows_the_cli_bars() -> None:
    from tqdm import tqdm

    stream = io.StringIO()
    images = tqdm(
        total=4,
        desc="images",
        unit="",
        file=stream,
        position=0,
        disable=False,
        mininterval=0,
        dynamic_ncols=True,
    )
    tiles = tqdm(
        total=10,
        desc="tiles",
        unit="",
        file=stream,
        position=1,
        disable=False,
        mininterval=0,
        dynamic_ncols=True,
    )
    tiles.update(5)
    tiles.close()
    images.update(1)
    tqdm.write("ok    images/a.tif: 3 cracks, 1.25 m, 4 tiles, 2.1 s", file=stream)
    images.update(3)
    images.close()
    feedback = Feedback()
    lines = runner.ProgressLines(feedback)
    for piece in stream.getvalue().replace("\r", "\n").split("\n"):
        lines.line(piece)
    assert feedback.progress[0] == 0.0 and 12.5 in feedback.progress  # half the first image
    assert feedback.progress[-1] == 100.0 and feedback.progress == sorted(feedback.progress)
    assert feedback.log == [("info", "ok    images/a.tif: 3 cracks, 1.25 m, 4 tiles, 2.1 s")]
    lines.line("warning: 2 cracks without a building")
    lines.line("error: survey.yaml: invalid")
    assert feedback.log[-2:] == [
        ("warning", "warning: 2 cracks without a building"),
        ("error", "error: survey.yaml: invalid"),
    ]


def test_the_executable_comes_from_the_setting_then_the_environment_then_the_path(
    tmp_path, monkeypatch
) -> None:
    setting, env = tmp_path / "a" / "cracksurvey", tmp_path / "b" / "cracksurvey"
    for path in (setting, env):
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    monkeypatch.setenv("CRACKSURVEY_EXECUTABLE", str(env))
    monkeypatch.setenv("PATH", str(tmp_path / "a"))
    assert runner.find_executable(str(setting)) == str(setting)
    assert runner.find_executable("") == str(env)
    monkeypatch.delenv("CRACKSURVEY_EXECUTABLE")
    assert runner.find_executable("") == str(setting)  # on the PATH
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(runner.CliError, match="Processing > Providers > cracksurvey"):
        runner.find_executable("")
    with pytest.raises(runner.CliError, match="is not an executable file"):
        runner.find_executable(str(tmp_path / "nowhere"))


def test_failures_come_back_as_the_cli_error_line(tmp_path) -> None:
    script = tmp_path / "fails"
    script.write_text(
        "#!/bin/sh\necho 'error: survey: not a directory; give the survey' >&2\nexit 2\n"
    )
    script.chmod(0o755)
    feedback = Feedback()
    with pytest.raises(runner.CliError, match="process failed: error: survey: not a directory"):
        runner.run_cli(str(script), ["process", "x"], feedback)
    assert ("error", "error: survey: not a directory; give the survey") in feedback.log
    assert "PYTHONPATH" not in runner.child_environment()
    assert os.environ.get("CRACKSURVEY_PROGRESS") is None  # only the child gets the bars
