"""The ``process`` command: a survey directory to crack layers, with progress bars on stderr."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import typing
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cracksurvey.cli.group import bars_disabled, main
from cracksurvey.cli.signals import StopSignals, exit_code, stop_on_signals
from cracksurvey.config import ModelConfig, Precision, TilingConfig, parse_set_options
from cracksurvey.io.lock import check_run_lock
from cracksurvey.progress import ProgressEvent

if TYPE_CHECKING:
    from cracksurvey.process import RunSummary


def _process_overrides(
    set_items: tuple[str, ...],
    *,
    weights: str | None,
    scheduler: str | None,
    workers: int | None,
    tile_px: int | None,
    threshold_px: float | None,
    precision: str | None,
) -> dict[str, dict[str, Any]]:
    """The command-line config layer: ``--set`` items, then the dedicated options."""
    layer = parse_set_options(set_items)
    options = {
        ("model", "weights"): weights,
        ("engine", "scheduler"): scheduler if scheduler != "synchronous" else None,
        ("engine", "workers"): workers,
        ("tiling", "tile_px"): tile_px,
        ("model", "threshold_px"): threshold_px,
        ("model", "precision"): precision,
    }
    for (section, key), value in options.items():
        if value is not None:
            layer.setdefault(section, {})[key] = value
    return layer


class _WarningLines:
    """Warnings as lines on stderr, the same warning for several images as one line.

    A warning about one image reads ``NAME: what``; those with the same ``what`` are held
    until :meth:`flush` and printed as ``N images (a, b, c and N-3 more): what``. Each image
    keeps its own warning in the ``images`` layer.
    """

    SHOWN = 3

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.pending: dict[str, list[str]] = {}

    def add(self, message: str) -> None:
        text = " ".join(message.split())
        name, colon, what = text.partition(": ")
        if not colon:  # not about one image
            name, what = "", text
        self.pending.setdefault(what, []).append(name)

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for what, names in pending.items():
            named = list(dict.fromkeys(n for n in names if n))
            if not named:
                self.write(f"warning: {what}")
            elif len(named) == 1:
                self.write(f"warning: {named[0]}: {what}")
            else:
                more = len(named) - self.SHOWN
                shown = ", ".join(named[: self.SHOWN]) + (f" and {more} more" if more > 0 else "")
                self.write(f"warning: {len(named)} images ({shown}): {what}")


class _ProcessProgress:
    """tqdm bars on stderr (image files read, images, tiles of the current image), one line
    per image, and the warnings, grouped (:class:`_WarningLines`) before the images start and
    at the end."""

    def __init__(self, *, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.reading: Any = None
        self.images: Any = None
        self.tiles: Any = None
        self.warnings = _WarningLines(self.write)
        self.stop: StopSignals | None = None  # a signal whose interrupt was lost is raised

    def _bar(self, total: int, desc: str, position: int) -> Any:
        return self._tqdm(
            total=total,
            desc=desc,
            unit="",
            file=sys.stderr,
            position=position,
            disable=bars_disabled(self.quiet),
            mininterval=0.5,
            leave=False,
            dynamic_ncols=True,
        )

    def write(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def __call__(self, event: ProgressEvent) -> None:
        if self.stop is not None:
            self.stop.raise_if_stopping()
        if event.kind == "discover":
            if self.reading is None:
                self.reading = self._bar(event.total, "reading images", 0)
            self.reading.update(event.done - self.reading.n)
        elif event.kind == "images":
            if self.reading is not None:
                self.reading.close()
                self.reading = None
            self.warnings.flush()
            self.images = self._bar(event.total, "images", 0)
        elif event.kind == "image":
            if self.tiles is not None:
                self.tiles.close()
            self.tiles = None
            self.images.set_postfix_str(event.image or "", refresh=False)
        elif event.kind == "tile":
            if self.tiles is None:
                self.tiles = self._bar(event.total, "tiles", 1)
            self.tiles.update(event.done - self.tiles.n)
        elif event.kind == "image_done":
            self.images.update(1)
            outcome = event.outcome
            assert outcome is not None
            if outcome.status == "error" or not self.quiet:
                self.write(outcome.line() + (" (cached)" if event.cached else ""))

    def close(self) -> None:
        for bar in (self.tiles, self.images, self.reading):
            if bar is not None:
                bar.close()
        self.tiles = self.images = self.reading = None
        self.warnings.flush()


def _drop_reported_image_errors(record: logging.LogRecord) -> bool:
    """Logging filter: image errors of discovery and processing (the progress prints them)."""
    return not (
        record.levelno == logging.ERROR
        and (record.name == "cracksurvey.survey" or record.name.startswith("cracksurvey.process"))
    )


def _process_help() -> str:
    return """Detect cracks in every image of SURVEY_DIR; write GIS layers and summaries.

    \b
    Inputs (SURVEY_DIR):
      images/ (or the folder itself)  *.tif GeoTIFFs; *.jpg/*.png with a world file
                                      (+ .prj), or a gsd_mm in images.csv
      images.csv     optional: image, building_id, facade_id, gsd_mm, façade plane
                     (base_x0, base_y0, base_x1, base_y1, base_z)
      buildings.gpkg optional: footprints with a building_id column
      survey.yaml    optional: config (survey.crs, survey.gsd_mm, any section of
                     configs/process/default.yaml)

    \b
    Outputs (--out, default SURVEY_DIR/cracksurvey/):
      cracks.gpkg    layers cracks (MultiLineString), crack_branches (LineString),
                     images (footprints + status), buildings (summary), cracks_3d
                     (façades placed in the world); with images in several CRSs,
                     one cracks/crack_branches/images layer per CRS, suffixed
                     (_epsg32633, _facade_<id>, _px)
      rasters/<image>_distance.tif, rasters/<image>_mask.tif   COGs
      summary.csv, summary.json   one row per building
      run.json       version, model, effective config, input hashes, timings,
                     per-image status

    \b
    Resume: each finished image is cached in OUT/.cache (keyed by the image's
    content, the model checksum and the config that changes its results).
    A run stopped before the end (Ctrl-C, kill, power loss) writes no run.json:
    run the same command again and only the missing images are computed. With
    --overwrite, unchanged images are taken from the cache too; --no-cache
    recomputes them all. Ctrl-C or SIGTERM stop the run in order: one line says
    how many images were kept (exit status 130 or 143).

    \b
    One run per output folder: OUT/cracksurvey.lock names the run that holds it
    (host, process id, start time, command); a second run on the same OUT
    refuses, --overwrite or not. The lock of a run that ended without removing
    it is taken over, with a warning, when that run was on this host; one from
    another host cannot be checked: delete it, or pass --break-lock, once you
    know that run has ended. Dask's own messages go to OUT/cracksurvey.log
    (to the terminal with -v).

    \b
    Cluster: --scheduler tcp://HOST:8786 runs the tiles on an existing Dask
    cluster (weights are sent to the workers; no shared folder needed for
    them, but every worker must read the images at the same path). Workers
    started with --resources GPU=1 take the model work; model.device=auto
    picks cuda or cpu in each worker.

    \b
    Config precedence: defaults < --preset < survey.yaml < --config < --set < options.
    Exit status: 0 all images processed, 1 some image failed (the others keep their
    results), 2 usage, survey, model or output-folder error, or the output folder
    in use (nothing processed; after a full disk mid-run, the finished images stay
    cached), 130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
    """


@main.command("process", help=_process_help())
@click.argument("survey_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="SURVEY_DIR/cracksurvey",
    help="Output folder.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="model.weights, else the shipped model",
    help="Model .safetensors with its .json model card beside it.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Process config YAML, applied over survey.yaml.",
)
@click.option(
    "--preset",
    default=None,
    metavar="NAME",
    help="Config preset: configs/process/NAME.yaml, or a YAML path.",
)
@click.option(
    "--set",
    "set_items",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Set any config key, e.g. --set vectorize.min_crack_length_px=20 (repeatable).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the outputs of a previous run in the output folder (cached "
    "images are reused unless --no-cache).",
)
@click.option(
    "--break-lock",
    "break_lock",
    is_flag=True,
    help="Take over the output folder's lock when the run holding it cannot be checked (on "
    "another host): only once you know that run has ended.",
)
@click.option(
    "--no-cache",
    "no_cache",
    is_flag=True,
    help="Recompute every image instead of reusing OUT/.cache.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    show_default="a local Dask cluster",
    help="Dask scheduler address (tcp://host:8786); 'synchronous' runs the "
    "tiles in this process without Dask (debugging).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    show_default="sized to the machine",
    help="Local Dask worker processes.",
)
@click.option(
    "--tile-px",
    type=click.IntRange(min=1),
    default=None,
    show_default=f"{TilingConfig.tile_px}",
    help="Tile side in pixels, halo included (speed/memory only; results do not depend on it).",
)
@click.option(
    "--threshold-px",
    type=float,
    default=None,
    show_default="the model card's calibrated threshold",
    help="Crack = predicted distance <= this (pixels).",
)
@click.option(
    "--precision",
    type=click.Choice(typing.get_args(Precision)),
    default=None,
    show_default=ModelConfig.precision,
    help="Inference precision (auto = bf16 where the device supports it).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run record (= run.json) on stdout."
)
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars and no per-image lines except errors."
)
@click.pass_context
def process(
    ctx: click.Context,
    survey_dir: Path,
    out_dir: Path | None,
    weights: str | None,
    config_path: str | None,
    preset: str | None,
    set_items: tuple[str, ...],
    overwrite: bool,
    break_lock: bool,
    no_cache: bool,
    scheduler: str | None,
    workers: int | None,
    tile_px: int | None,
    threshold_px: float | None,
    precision: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    verbose = bool(ctx.obj.get("verbose"))
    if not verbose:  # read when Dask is imported: its scheduler logs at INFO
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    out = out_dir if out_dir is not None else survey_dir / "cracksurvey"
    # a folder in use is refused before anything heavy is loaded
    check_run_lock(out, break_lock=break_lock)

    overrides = _process_overrides(
        set_items,
        weights=weights,
        scheduler=scheduler,
        workers=workers,
        tile_px=tile_px,
        threshold_px=threshold_px,
        precision=precision,
    )
    progress = _ProcessProgress(quiet=quiet)
    # Image failures are logged by the library and reported by `progress` as one line each.
    handlers = [] if verbose else logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(_drop_reported_image_errors)

    def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        progress.warnings.add(str(message))

    with stop_on_signals() as stop:
        progress.stop = stop
        summary = None
        try:
            from cracksurvey.errors import CrackSurveyWarning
            from cracksurvey.logs import LOG_FILE, engine_logs_to
            from cracksurvey.process import process_survey  # imports Dask

            with warnings.catch_warnings(), ExitStack() as logs:
                if not verbose:
                    logs.enter_context(engine_logs_to(out / LOG_FILE))
                warnings.simplefilter("always", CrackSurveyWarning)
                warnings.showwarning = show_warning
                summary = process_survey(
                    survey_dir,
                    out_dir=out,
                    preset=preset,
                    config_path=config_path,
                    overrides=overrides,
                    overwrite=overwrite,
                    use_cache=not no_cache,
                    scheduler=None if scheduler == "synchronous" else scheduler,
                    synchronous=scheduler == "synchronous",
                    progress=progress,
                    break_lock=break_lock,
                )
        except KeyboardInterrupt as stopped:
            if summary is None:  # else the run had finished: nothing was stopped
                stop.done()
                progress.close()
                signum = stop.signum or signal.SIGINT
                what = (
                    str(stopped)
                    if stopped.args
                    else "stopped before the run started; run the same command again"
                )
                click.echo(f"stopped by {signal.Signals(signum).name}: {what}", err=True)
                ctx.exit(exit_code(signum))
        finally:
            stop.done()
            progress.close()
            for handler in handlers:
                handler.removeFilter(_drop_reported_image_errors)
        assert summary is not None
        _report(summary, quiet=quiet, as_json=as_json)
        ctx.exit(summary.exit_code)


def _report(summary: RunSummary, *, quiet: bool, as_json: bool) -> None:
    """The last line of a finished run on stderr, and run.json on stdout with ``--json``."""
    failed = len(summary.failed)
    done = len(summary.images) - failed
    if not quiet:
        unassigned = (
            f", {summary.n_cracks_unassigned} without a building"
            if summary.n_cracks_unassigned
            else ""
        )
        click.echo(
            f"{done} of {len(summary.images)} images processed"
            f"{f', {failed} failed' if failed else ''}; {summary.n_cracks} cracks"
            f"{unassigned} -> {summary.gpkg_path}",
            err=True,
        )
    if as_json:
        from cracksurvey.io.outputs import json_ready

        click.echo(json.dumps(json_ready(summary.record), indent=1))
