"""The ``train``, ``evaluate`` and ``report`` commands (``process`` has its own module)."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import click

from cracksurvey.cli.group import main, out_dirs_argument, tqdm_factory
from cracksurvey.config import Precision


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Training recipe YAML (see configs/train/).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory for checkpoints, history and the final model. [default: runs/<recipe name>]",
)
@click.option(
    "--data",
    "data_root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Root of the dataset folders named in the recipe (overrides data_root).",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."
)
@click.option("--epochs", type=int, default=None, help="Override the recipe's number of epochs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train(
    config_path: str,
    run_dir: str | None,
    data_root: str | None,
    resume: bool,
    epochs: int | None,
    as_json: bool,
) -> None:
    """Train a TernausNet with the MSE + Dice + TOPO loss on image/mask folders.

    Checkpoints every epoch; selects the best epoch on the recipe's validation metric; at the end
    calibrates the threshold on validation and writes RUN/model.safetensors + model.json, the
    model card that `cracksurvey process --weights` reads.
    """
    from cracksurvey.train.loop import train as run_training
    from cracksurvey.train.recipe import load_config

    overrides: dict[str, Any] = {}
    if data_root:
        overrides["data_root"] = data_root
    if epochs:
        overrides["epochs"] = epochs
    cfg = load_config(config_path, overrides)
    run = Path(run_dir) if run_dir else Path("runs") / cfg.name
    if not resume and (run / "checkpoint.pt").exists():
        raise click.UsageError(
            f"{run} already holds a run; pass --resume to continue it or choose another --run"
        )
    summary = run_training(cfg, run, resume=resume, progress=tqdm_factory())
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        best = summary["best"]
        click.echo(
            f"{summary['epochs_done']} epochs in {run}; best epoch {best.get('epoch')} "
            f"({cfg.selection_metric} {best.get('score', 0):.3f} at threshold {best.get('threshold_px')} px)"
        )
        if "calibration" in summary:
            cal = summary["calibration"]
            click.echo(
                f"model: {run / 'model.safetensors'} (calibrated threshold {cal['threshold_px']} px)"
            )


@main.command()
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model .safetensors (with its .json card beside it). [default: the shipped model]",
)
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Dataset folder with <split>/images and <split>/masks; repeat for several.",
)
@click.option("--split", default="test", show_default=True, help="Split folder to score.")
@click.option(
    "--slack-px", default=5.0, show_default=True, help="Relaxed matching tolerance (pixels)."
)
@click.option(
    "--threshold-px", type=float, default=None, help="Override the card's calibrated threshold."
)
@click.option(
    "--variant",
    type=click.Choice(["wiedemann", "authors"]),
    default="wiedemann",
    show_default=True,
    help="Completeness/quality formulas: Wiedemann's (docs/method.md, D16) or as in the authors' code.",
)
@click.option("--cpp-patch-px", default=256, show_default=True, help="CPP patch size (pixels).")
@click.option(
    "--cpp-min-length-px",
    default=10.0,
    show_default=True,
    help="CPP: shortest centreline fragment counted (pixels).",
)
@click.option(
    "--cpp-min-area-px",
    default=50,
    show_default=True,
    help="Mask-area CPP of earlier versions: smallest fragment counted (pixels).",
)
@click.option(
    "--halo-px",
    default=0,
    show_default=True,
    help="Reflect padding around each image (pixels); 0 predicts the image as it is.",
)
@click.option(
    "--postprocess/--no-postprocess",
    default=True,
    show_default=True,
    help="Score the crack layer as process writes it (gap bridging, spur pruning, minimum "
    "length at the process defaults) or the raw thresholded map.",
)
@click.option("--tta", is_flag=True, help="Average the 8 flips and quarter turns of each image.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="With --postprocess: drop the cracks the crack verifier rejects, as process does.",
)
@click.option(
    "--verifier",
    "verifier_weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Crack verifier .safetensors (with its .json card beside it), at its card's "
    "min_score, as process's verify.weights. [default: the shipped verifier]",
)
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    help="Resamples of images for the 95 % intervals (0: none).",
)
@click.option(
    "--precision", type=click.Choice(typing.get_args(Precision)), default="auto", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON on stdout.")
def evaluate(
    weights: str | None,
    data_dirs: tuple[str, ...],
    split: str,
    slack_px: float,
    threshold_px: float | None,
    variant: str,
    cpp_patch_px: int,
    cpp_min_length_px: float,
    cpp_min_area_px: int,
    halo_px: int,
    postprocess: bool,
    tta: bool,
    verify: bool,
    verifier_weights: str | None,
    bootstrap: int,
    precision: Precision,
    as_json: bool,
) -> None:
    """Score a model on labelled data: correctness, completeness, quality, F1, CPP, clDice,
    clIoU, dilated F1, width; bootstrap 95 % intervals over images."""
    from cracksurvey.evaluation.evaluate import evaluate_model, format_table

    results = evaluate_model(
        weights,
        [Path(d) for d in data_dirs],
        split=split,
        slack_px=slack_px,
        threshold_px=threshold_px,
        variant=variant,
        cpp_patch_px=cpp_patch_px,
        cpp_min_length_px=cpp_min_length_px,
        cpp_min_area_px=cpp_min_area_px,
        halo_px=halo_px,
        postprocess=postprocess,
        tta=tta,
        verify=verify,
        verifier_weights=verifier_weights,
        bootstrap=bootstrap,
        precision=precision,
        progress=tqdm_factory(),
    )
    if as_json:
        click.echo(json.dumps(results, indent=1, default=str))
    else:
        click.echo(format_table(results))


@main.command("report")
@out_dirs_argument
@click.option(
    "--out",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="City folder for report.html, summary.csv/json and cracks.gpkg.",
)
@click.option(
    "--crs",
    default=None,
    metavar="CRS",
    show_default="the first survey's projected CRS",
    help="Projected CRS of the merged GeoPackage, e.g. EPSG:32633.",
)
@click.option(
    "--no-gpkg",
    "no_gpkg",
    is_flag=True,
    help="Write the report and tables only, no merged GeoPackage.",
)
@click.option(
    "--thumbnail-px",
    type=click.IntRange(min=64),
    default=360,
    show_default=True,
    help="Longest side of each image thumbnail (the report grows with it).",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Images shown per building.",
)
@click.option("--overwrite", is_flag=True, help="Replace a previous report in the city folder.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def report(
    out_dirs: tuple[Path, ...],
    dest: Path,
    crs: str | None,
    no_gpkg: bool,
    thumbnail_px: int,
    max_images: int,
    overwrite: bool,
    as_json: bool,
) -> None:
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
        out_dirs,
        dest,
        overwrite=overwrite,
        merge=not no_gpkg,
        crs=crs,
        options=ReportOptions(thumbnail_px=thumbnail_px, max_images=max_images),
    )
    click.echo(
        f"{result.n_buildings} buildings of {result.n_surveys} surveys -> {result.report}", err=True
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "report": str(result.report),
                    "summary_csv": str(result.summary_csv),
                    "summary_json": str(result.summary_json),
                    "geopackage": str(result.geopackage) if result.geopackage else None,
                    "n_surveys": result.n_surveys,
                    "n_buildings": result.n_buildings,
                },
                indent=1,
            )
        )
