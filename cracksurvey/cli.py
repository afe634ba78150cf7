"""The ``cracksurvey`` command line: one click group, thin commands.

Heavy imports (torch, dask, geopandas) happen inside the commands so ``--help`` is instant.
Errors are one clear line (traceback with ``-v``); progress bars go to stderr; ``--json`` prints
machine-readable results on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import ModelConfig, Precision, TilingConfig
from .errors import CrackSurveyError

log = logging.getLogger("cracksurvey")


class _Group(click.Group):
    """Turns library errors into one line and exit code 2, unless -v was given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrackSurveyError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cracksurvey")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Crack layers from façade and orthophoto images.

    \b
    cracksurvey process SURVEY_DIR      images -> cracks.gpkg, COGs, summary, report
    cracksurvey report OUT_DIR... --out CITY   city-wide report + merged GeoPackage
    cracksurvey train --config RECIPE   train or fine-tune a model on image/mask folders
    cracksurvey finetune OUT_DIR... --run RUN   fine-tune on surveys corrected in QGIS
    cracksurvey evaluate --data DIR     score a model on labelled data
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


def _bars_disabled(quiet: bool) -> bool | None:
    """tqdm's ``disable``: off with --quiet; else shown on a terminal, and on a pipe too when
    CRACKSURVEY_PROGRESS=bars (the QGIS plugin reads them there)."""
    if quiet:
        return True
    return False if os.environ.get("CRACKSURVEY_PROGRESS") == "bars" else None


def _tqdm_factory(quiet: bool = False) -> Any:
    from tqdm import tqdm

    def make(total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, file=sys.stderr, disable=_bars_disabled(quiet), mininterval=1, leave=False)

    return make


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training recipe YAML (see configs/train/).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory for checkpoints, history and the final model. [default: runs/<recipe name>]")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Root of the dataset folders named in the recipe (overrides data_root).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's number of epochs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train(config_path: str, run_dir: str | None, data_root: str | None, resume: bool, epochs: int | None, as_json: bool) -> None:
    """Train a TernausNet with the MSE + Dice + TOPO loss on image/mask folders.

    Checkpoints every epoch; selects the best epoch on the recipe's validation metric; at the end
    calibrates the threshold on validation and writes RUN/model.safetensors + model.json, the
    model card that `cracksurvey process --weights` reads.
    """
    from .train.loop import load_config
    from .train.loop import train as run_training

    overrides: dict[str, Any] = {}
    if data_root:
        overrides["data_root"] = data_root
    if epochs:
        overrides["epochs"] = epochs
    cfg = load_config(config_path, overrides)
    run = Path(run_dir) if run_dir else Path("runs") / cfg.name
    if not resume and (run / "checkpoint.pt").exists():
        raise click.UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --run")
    summary = run_training(cfg, run, resume=resume, progress=_tqdm_factory())
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        best = summary["best"]
        click.echo(f"{summary['epochs_done']} epochs in {run}; best epoch {best.get('epoch')} "
                   f"({cfg.selection_metric} {best.get('score', 0):.3f} at threshold {best.get('threshold_px')} px)")
        if "calibration" in summary:
            cal = summary["calibration"]
            click.echo(f"model: {run / 'model.safetensors'} (calibrated threshold {cal['threshold_px']} px)")


@main.command()
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Model .safetensors (with its .json card beside it). [default: the shipped model]")
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder with <split>/images and <split>/masks; repeat for several.")
@click.option("--split", default="test", show_default=True, help="Split folder to score.")
@click.option("--slack-px", default=5.0, show_default=True, help="Relaxed matching tolerance (pixels).")
@click.option("--threshold-px", type=float, default=None, help="Override the card's calibrated threshold.")
@click.option("--variant", type=click.Choice(["wiedemann", "authors"]), default="wiedemann", show_default=True,
              help="Completeness/quality formulas: fixed (B9) or as in the authors' code.")
@click.option("--cpp-patch-px", default=256, show_default=True, help="CPP patch size (pixels).")
@click.option("--cpp-min-area-px", default=50, show_default=True, help="CPP minimum fragment area (pixels).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON on stdout.")
def evaluate(weights: str | None, data_dirs: tuple[str, ...], split: str, slack_px: float, threshold_px: float | None,
             variant: str, cpp_patch_px: int, cpp_min_area_px: int, precision: str, as_json: bool) -> None:
    """Score a model on labelled data: correctness, completeness, quality, F1, CPP, clDice, Betti-0."""
    from .evaluate import evaluate_model, format_table

    results = evaluate_model(
        weights, [Path(d) for d in data_dirs], split=split, slack_px=slack_px, threshold_px=threshold_px,
        variant=variant, cpp_patch_px=cpp_patch_px, cpp_min_area_px=cpp_min_area_px, precision=precision,
        progress=_tqdm_factory(),
    )
    if as_json:
        click.echo(json.dumps(results, indent=1, default=str))
    else:
        click.echo(format_table(results))


# --------------------------------------------------------------------------------------------
# process


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
    from .config import parse_set_options

    layer = parse_set_options(set_items)
    options = {
        ("model", "weights"): weights,
        ("engine", "scheduler"): scheduler if scheduler != "synchronous" else None,
        ("engine", "workers"): workers,
        ("tiling", "tile_px"): tile_px,
        ("model", "threshold"): threshold_px,
        ("model", "precision"): precision,
    }
    for (section, key), value in options.items():
        if value is not None:
            layer.setdefault(section, {})[key] = value
    return layer


class _ProcessProgress:
    """Two tqdm bars on stderr (images, tiles of the current image) and one line per image."""

    def __init__(self, *, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.images: Any = None
        self.tiles: Any = None

    def _bar(self, total: int, desc: str, position: int) -> Any:
        return self._tqdm(total=total, desc=desc, unit="", file=sys.stderr, position=position,
                          disable=_bars_disabled(self.quiet), mininterval=0.5, leave=False,
                          dynamic_ncols=True)

    def write(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def __call__(self, event: Any) -> None:
        if event.kind == "images":
            self.images = self._bar(event.total, "images", 0)
        elif event.kind == "image":
            if self.tiles is not None:
                self.tiles.close()
            self.tiles = None
            self.images.set_postfix_str(event.image, refresh=False)
        elif event.kind == "tile":
            if self.tiles is None:
                self.tiles = self._bar(event.total, "tiles", 1)
            self.tiles.update(event.done - self.tiles.n)
        elif event.kind == "image_done":
            self.images.update(1)
            outcome = event.outcome
            if outcome.status == "error" or not self.quiet:
                self.write(outcome.line() + (" (cached)" if event.cached else ""))

    def close(self) -> None:
        for bar in (self.tiles, self.images):
            if bar is not None:
                bar.close()


def _drop_reported_image_errors(record: logging.LogRecord) -> bool:
    """Logging filter: image errors of discovery and processing (the progress prints them)."""
    return not (
        record.levelno == logging.ERROR
        and record.name in ("cracksurvey.survey", "cracksurvey.process")
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
    recomputes them all.

    \b
    Cluster: --scheduler tcp://HOST:8786 runs the tiles on an existing Dask
    cluster (weights are sent to the workers; no shared folder needed for
    them, but every worker must read the images at the same path). Workers
    started with --resources GPU=1 take the model work; model.device=auto
    picks cuda or cpu in each worker.

    \b
    Config precedence: defaults < --preset < survey.yaml < --config < --set < options.
    Exit status: 0 all images processed, 1 some image failed (the others keep their
    results), 2 usage, survey, model or output-folder error (nothing processed;
    after a full disk mid-run, the finished images stay cached).
    """


@main.command("process", help=_process_help())
@click.argument("survey_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, show_default="SURVEY_DIR/cracksurvey", help="Output folder.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              show_default="model.weights, else the shipped model",
              help="Model .safetensors with its .json model card beside it.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Process config YAML, applied over survey.yaml.")
@click.option("--preset", default=None, metavar="NAME",
              help="Config preset: configs/process/NAME.yaml, or a YAML path.")
@click.option("--set", "set_items", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Set any config key, e.g. --set vectorize.min_crack_length_px=20 "
                   "(repeatable).")
@click.option("--overwrite", is_flag=True,
              help="Replace the outputs of a previous run in the output folder (cached "
                   "images are reused unless --no-cache).")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Recompute every image instead of reusing OUT/.cache.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              show_default="a local Dask cluster",
              help="Dask scheduler address (tcp://host:8786); 'synchronous' runs the "
                   "tiles in this process without Dask (debugging).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              show_default="sized to the machine", help="Local Dask worker processes.")
@click.option("--tile-px", type=click.IntRange(min=1), default=None,
              show_default=f"{TilingConfig.tile_px}",
              help="Tile side in pixels, halo included (speed/memory only; results do "
                   "not depend on it).")
@click.option("--threshold-px", type=float, default=None,
              show_default="the model card's calibrated threshold",
              help="Crack = predicted distance <= this (pixels).")
@click.option("--precision", type=click.Choice(typing.get_args(Precision)), default=None,
              show_default=ModelConfig.precision,
              help="Inference precision (auto = bf16 where the device supports it).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run record (= run.json) on stdout.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars and no per-image lines except errors.")
@click.pass_context
def process(ctx: click.Context, survey_dir: Path, out_dir: Path | None, weights: str | None,
            config_path: str | None, preset: str | None, set_items: tuple[str, ...],
            overwrite: bool, no_cache: bool, scheduler: str | None, workers: int | None,
            tile_px: int | None, threshold_px: float | None, precision: str | None,
            as_json: bool, quiet: bool) -> None:
    import os
    import warnings

    from .errors import CrackSurveyWarning
    from .io.outputs import json_ready
    from .process import process_survey

    if not ctx.obj.get("verbose"):  # read when Dask is imported: its scheduler logs at INFO
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

    overrides = _process_overrides(
        set_items, weights=weights, scheduler=scheduler, workers=workers, tile_px=tile_px,
        threshold_px=threshold_px, precision=precision,
    )
    progress = _ProcessProgress(quiet=quiet)
    # Image failures are logged by the library and reported by `progress` as one line each.
    handlers = [] if ctx.obj.get("verbose") else logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(_drop_reported_image_errors)

    def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        progress.write("warning: " + " ".join(str(message).split()))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CrackSurveyWarning)
            warnings.showwarning = show_warning
            summary = process_survey(
                survey_dir, out_dir=out_dir, preset=preset, config_path=config_path,
                overrides=overrides, overwrite=overwrite, use_cache=not no_cache,
                scheduler=None if scheduler == "synchronous" else scheduler,
                synchronous=scheduler == "synchronous", progress=progress,
            )
    finally:
        progress.close()
        for handler in handlers:
            handler.removeFilter(_drop_reported_image_errors)
    failed = len(summary.failed)
    done = len(summary.images) - failed
    if not quiet:
        unassigned = (f", {summary.n_cracks_unassigned} without a building"
                      if summary.n_cracks_unassigned else "")
        click.echo(
            f"{done} of {len(summary.images)} images processed"
            f"{f', {failed} failed' if failed else ''}; {summary.n_cracks} cracks"
            f"{unassigned} -> {summary.gpkg_path}",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(json_ready(summary.record), indent=1))
    ctx.exit(summary.exit_code)


@main.command("report")
@click.argument("out_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="City folder for report.html, summary.csv/json and cracks.gpkg.")
@click.option("--crs", default=None, metavar="CRS",
              show_default="the first survey's projected CRS",
              help="Projected CRS of the merged GeoPackage, e.g. EPSG:32633.")
@click.option("--no-gpkg", "no_gpkg", is_flag=True,
              help="Write the report and tables only, no merged GeoPackage.")
@click.option("--thumbnail-px", type=click.IntRange(min=64), default=360, show_default=True,
              help="Longest side of each image thumbnail (the report grows with it).")
@click.option("--max-images", type=click.IntRange(min=0), default=2, show_default=True,
              help="Images shown per building.")
@click.option("--overwrite", is_flag=True, help="Replace a previous report in the city folder.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def report(out_dirs: tuple[Path, ...], dest: Path, crs: str | None, no_gpkg: bool,
           thumbnail_px: int, max_images: int, overwrite: bool, as_json: bool) -> None:
    """Merge survey outputs (OUT_DIR...) into one city-wide damage report.

    \b
    Writes into --out:
      report.html    self-contained: overview map, districts, buildings ranked
                     across surveys, per-building sections, provenance
      summary.csv    every survey's building summary with survey and district
      summary.json   the same with column descriptions
      cracks.gpkg    the surveys' layers merged (buildings, cracks_3d, ...)

    A survey's district is survey.district of its survey.yaml, else its folder
    name. Damage levels are indicative, not a structural assessment.
    """
    from cracksurvey.report import ReportOptions, write_city_report

    result = write_city_report(
        out_dirs, dest, overwrite=overwrite, merge=not no_gpkg, crs=crs,
        options=ReportOptions(thumbnail_px=thumbnail_px, max_images=max_images),
    )
    click.echo(f"{result.n_buildings} buildings of {result.n_surveys} surveys -> "
               f"{result.report}", err=True)
    if as_json:
        click.echo(json.dumps({
            "report": str(result.report), "summary_csv": str(result.summary_csv),
            "summary_json": str(result.summary_json),
            "geopackage": str(result.geopackage) if result.geopackage else None,
            "n_surveys": result.n_surveys, "n_buildings": result.n_buildings,
        }, indent=1))


# --------------------------------------------------------------------------------------------
# finetune


def _survey_dir_pairs(items: tuple[str, ...], out_dirs: tuple[Path, ...]) -> dict[str, str]:
    """``--survey-dir OUT_DIR=SURVEY_DIR`` items (a bare SURVEY_DIR with one OUT_DIR)."""
    pairs = {}
    for item in items:
        out, sep, survey = item.rpartition("=")
        if not sep:
            if len(out_dirs) != 1:
                raise click.BadParameter(
                    f"{item!r}: with several OUT_DIRs write OUT_DIR=SURVEY_DIR",
                    param_hint="--survey-dir")
            out, survey = str(out_dirs[0]), item
        pairs[out] = survey
    return pairs


@main.command("finetune")
@click.argument("out_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the fine-tuned model, its card, finetune.json and the samples.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              show_default="the shipped model", help="Weights to start from (.safetensors with "
              "its .json model card beside it).")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Optimiser steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Crops per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4,
              show_default=True, help="Adam learning rate (constant).")
@click.option("--crop-px", type=click.IntRange(min=32), default=None,
              show_default="the parent recipe's crop_px",
              help="Crop side in pixels (a multiple of 32); crops lie inside reviewed areas.")
@click.option("--default-width-mm", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Width of cracks that have none (a warning says how many).")
@click.option("--survey-dir", "survey_dirs", multiple=True, metavar="OUT_DIR=SURVEY_DIR",
              help="Where a survey's images are now, if its folder moved after processing "
                   "(repeatable; a bare SURVEY_DIR with one OUT_DIR).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the crops and augmentations.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0: all).")
@click.option("--overwrite", is_flag=True, help="Replace a fine-tuned model in the run folder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (= finetune.json without the loss history) on stdout.")
def finetune(out_dirs: tuple[Path, ...], run_dir: Path, weights: str | None, steps: int,
             batch_size: int, lr: float, crop_px: int | None, default_width_mm: float,
             survey_dirs: tuple[str, ...], seed: int, threads: int, overwrite: bool,
             as_json: bool) -> None:
    """Fine-tune on processed surveys (OUT_DIR...) whose cracks you corrected in QGIS.

    \b
    In each OUT_DIR/cracks.gpkg, before running this:
      cracks     delete false cracks; draw missed cracks as lines (their
                 width in width_mean_mm, or a width_mm column you add)
      reviewed   a polygon layer you create (same CRS as its cracks layer;
                 reviewed_<anything> for several): draw the areas you checked

    \b
    Samples come only from reviewed areas: inside, every line is a crack
    and everything else is not. Starts from --weights (default: the shipped
    model), keeps its threshold, and writes into --run:
      model.safetensors, model.json   card with the lineage (parent sha256,
                                      surveys, edit and sample counts)
      finetune.json                   the same, with the loss history
      samples/<survey>/<image>_target.tif   what training saw: 0 no crack,
                                      1 crack body, 2 centreline, 255 unreviewed

    Then: cracksurvey process SURVEY --weights RUN/model.safetensors
    """
    import warnings

    from .errors import CrackSurveyWarning
    from .train.finetune import FINETUNE_JSON, finetune_from_surveys

    def show_warning(message: Any, *args: Any, **kwargs: Any) -> None:
        click.echo("warning: " + " ".join(str(message).split()), err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CrackSurveyWarning)
        warnings.showwarning = show_warning
        summary = finetune_from_surveys(
            out_dirs, run_dir, weights=weights, steps=steps, batch_size=batch_size, lr=lr,
            crop_px=crop_px, default_width_mm=default_width_mm,
            survey_dirs=_survey_dir_pairs(survey_dirs, out_dirs), seed=seed, threads=threads,
            overwrite=overwrite, progress=_tqdm_factory(),
        )
    samples = summary["lineage"]["samples"]
    click.echo(
        f"{steps} steps on {samples['images']} image(s) of {len(out_dirs)} survey(s) "
        f"({samples['reviewed_px']} reviewed px, {samples['centreline_px']} crack px) -> "
        f"{summary['model']} (details: {run_dir / FINETUNE_JSON})", err=True)
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1,
                              default=str))
