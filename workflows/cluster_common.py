"""Shared part of the cluster recipes: read configs/cluster/*.yaml, run `process` on a cluster.

The recipes only start (or find) a Dask cluster and hand its scheduler address to
:func:`cracksurvey.process.process_survey`, exactly what ``cracksurvey process --scheduler``
does; everything else (cache, resume, outputs) is the process tool's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "cluster"


def load_recipe(path: str | Path, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML at ``path`` over ``defaults``; unknown keys and a wrong ``kind`` are errors."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(defaults))}")
    if data.get("kind", defaults["kind"]) != defaults["kind"]:
        raise SystemExit(f"{path}: kind {data['kind']!r}, this recipe runs {defaults['kind']!r}")
    return {**defaults, **data}


def parser(kind: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("survey_dir", type=Path)
    p.add_argument("--cluster-config", type=Path, default=CONFIGS / f"{kind}.yaml",
                   help=f"cluster recipe YAML [default: configs/cluster/{kind}.yaml]")
    p.add_argument("--out", type=Path, default=None, help="output folder (as for process)")
    p.add_argument("--weights", default=None, help="model .safetensors (as for process)")
    p.add_argument("--overwrite", action="store_true", help="as for process")
    return p


def run_on(address: str, args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """``process`` on the cluster at ``address``; the exit status of ``cracksurvey process``
    (Ctrl-C and SIGTERM stop it in order, as they stop the command: 130 / 143)."""
    import signal

    from cracksurvey.cli.signals import exit_code, stop_on_signals
    from cracksurvey.errors import CrackSurveyError, RunInterrupted
    from cracksurvey.process import process_survey

    log(f"processing {args.survey_dir} on {address}")
    with stop_on_signals() as stop:
        try:
            summary = process_survey(args.survey_dir, out_dir=args.out, weights=args.weights,
                                     overwrite=args.overwrite, scheduler=address)
        except CrackSurveyError as exc:
            log(f"error: {exc}")
            return 2
        except RunInterrupted as exc:
            signum = stop.signum or signal.SIGINT
            log(f"stopped by {signal.Signals(signum).name}: {exc}")
            return exit_code(signum)
        finally:
            stop.done()
    for outcome in summary.images:
        log(outcome.line())
    log(f"{summary.n_cracks} cracks -> {summary.gpkg_path}")
    return summary.exit_code


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
