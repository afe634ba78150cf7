"""Benchmark the inference path on this machine: conv ceiling, model, engine, memory, layouts.

Usage::

    python workflows/benchmark.py                       # the shipped model
    python workflows/benchmark.py --weights my.safetensors --skip-16k
    python workflows/benchmark.py --json > bench.json

Prints (a) the oneDNN 3x3-conv ceiling in GFLOP/s (fp32, bf16), (b) the model's FLOPs per MP and
its forward throughput on a 1024 x 1024 tile (raw MP/s and core MP/s once the halo is paid),
as a fraction of the ceiling, (c) end-to-end MP/s of the engine on a synthetic georeferenced
4096 x 4096 GeoTIFF and its ratio to model-only, then of ``cracksurvey process`` on it, on a
survey of four such map images and on the same four as JPEG façade photos, (d) peak RSS (this
process plus Dask workers) on a 16k x 16k GeoTIFF, (e) throughput of the local-cluster layouts
(1 vs 2 workers).

``--scaling`` prints only (f): peak RSS and MP/s of ``cracksurvey process`` on 4k, 16k and 40k
square images (the 40k one a sparse, mostly-nodata GeoTIFF made on the fly) and engine MP/s with
1 and 2 local workers::

    python workflows/benchmark.py --scaling                       # 4096 16384 40000
    python workflows/benchmark.py --scaling --sizes 512 1024 --sparse-from 1024   # a smoke run

A benchmark, not a test: it asserts nothing. The machine may be shared; quote ratios from one
run. If the shipped weights are absent, a random-weight TernausNet with the default model's
architecture (UNet16, width 0.25, body head) stands in, with a note: speed and memory do not
depend on the weight values.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
import torch
from affine import Affine
from scipy import ndimage
from tqdm import tqdm

from cracksurvey.config import EngineConfig, Precision, TilingConfig
from cracksurvey.engine import Engine, available_cores, default_layout
from cracksurvey.model import (
    ModelCard,
    TernausNet,
    count_parameters,
    default_weights_path,
    flops_per_megapixel,
    load_model,
    save_model,
)
from cracksurvey.predict import (
    cpu_amx_supported,
    cpu_bf16_supported,
    cpu_kind,
    effective_precision,
    keep_freed_memory,
    release_freed_memory,
)
from cracksurvey.progress import ProgressEvent
from cracksurvey.tiling import tile_grid

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RunSettings:
    """What a benchmark run passes to the engine: tiles, precision, Dask layout."""

    tiling: TilingConfig
    precision: Precision
    engine: EngineConfig = EngineConfig()


def best_time(fn, *, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------------------------------------
# (a) conv ceiling


def conv_ceiling(precision: str, *, channels: int = 256, side: int = 128) -> float:
    """GFLOP/s of one large 3x3 conv, channels-last, inference mode."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(1, channels, side, side).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    flops = 2.0 * channels * channels * 9 * side * side

    def run() -> None:
        with torch.inference_mode(), autocast(precision):
            conv(x)

    return flops / best_time(run, repeats=5, warmup=2) / 1e9


# ---------------------------------------------------------------------------------------------
# (b) model only


def model_throughput(model: torch.nn.Module, precision: str, *, tile_px: int) -> float:
    """Raw forward MP/s on one (1, 3, tile, tile) input (bf16 once only where it is emulated)."""
    x = torch.randn(1, 3, tile_px, tile_px).contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), autocast(precision):
            model(x)

    slow = precision == "bf16" and not cpu_bf16_supported()
    seconds = best_time(run, repeats=1 if slow else 2, warmup=0 if slow else 1)
    return tile_px * tile_px / 1e6 / seconds


def _forward_worker(
    weights: str, shapes: list[tuple[int, int]], precision: str, barrier: Any, out: Any
) -> None:
    """One model-only worker: load, warm up each shape, wait for the others, time its tiles."""
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine's workers run the model
    model, _ = load_model(weights)
    model = model.to(memory_format=torch.channels_last)
    inputs = {s: torch.randn(1, 3, *s).contiguous(memory_format=torch.channels_last)
              for s in set(shapes)}
    with torch.inference_mode(), autocast(precision):
        for x in inputs.values():
            model(x)
        barrier.wait()
        start = time.perf_counter()
        for shape in shapes:
            model(inputs[shape])
        out.put(time.perf_counter() - start)


def model_only_on_grid(
    weights: Path, card: ModelCard, side: int, config: RunSettings, workers: int
) -> dict[str, float]:
    """Model-only MP/s over the engine's own tile grid and worker layout, nothing else.

    ``workers`` processes with one torch thread each (as the engine's workers run) share the
    forward passes of the engine's tiles for a ``side`` x ``side`` image, round robin, and run
    them at the same time (after a warm-up per shape and a barrier): no reading, no
    post-processing, no writing, no scheduler. The honest denominator for end-to-end /
    model-only: it includes what two forwards running at once cost each other on this CPU.
    """
    import multiprocessing as mp

    tiles = tile_grid(side, side, core_px=config.tiling.core_px, halo_px=config.tiling.halo_px,
                      multiple=card.input_multiple)
    shapes = [(t.read_row1 - t.read_row0, t.read_col1 - t.read_col0) for t in tiles]
    # largest first, dealt round robin: the workers get near-equal work (the best split)
    shapes.sort(key=lambda hw: -hw[0] * hw[1])
    n = max(1, min(workers, len(tiles)))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_forward_worker, args=(str(weights), shapes[i::n], config.precision, barrier, out))
             for i in range(n)]
    for p in procs:
        p.start()
    wall = max(out.get(timeout=3600) for _ in procs)
    for p in procs:
        p.join()
    return {
        "mp_per_s": side * side / 1e6 / wall,
        "n_tiles": len(tiles),
        "forward_mp": sum(r * c for r, c in shapes) / 1e6,
        "workers": n,
    }


def process_mps(
    weights: Path, images: Path | list[Path], tmp: Path, config: RunSettings, side: int,
    *, prefetch: bool = True, name: str = "survey",
) -> dict:
    """``cracksurvey process`` on a survey of ``images``: engine, vectorization, GeoPackage, report.

    Cluster start-up is included (it is paid once per run); the engine-only figure of (c)
    excludes it. ``prefetch=False`` switches off the engine's early start of the next image
    (to measure what it brings).
    """
    from cracksurvey.engine import Engine
    from cracksurvey.process import process_survey

    images = [images] if isinstance(images, Path) else images
    survey = tmp / f"{name}-{len(images)}"
    survey.mkdir(exist_ok=True)
    for image in images:
        target = survey / image.name
        if not target.exists():
            target.symlink_to(image)
    overrides = {"tiling": {"tile_px": config.tiling.tile_px, "halo_px": config.tiling.halo_px}}
    original = Engine._prefetch_one
    if not prefetch:
        Engine._prefetch_one = lambda self, image, max_in_flight: None
    try:
        t = time.perf_counter()
        summary = process_survey(survey, out_dir=tmp / "process-out", overrides=overrides,
                                 weights=weights, overwrite=True, use_cache=False)
        seconds = time.perf_counter() - t
    finally:
        Engine._prefetch_one = original
    if summary.exit_code != 0:
        raise SystemExit(f"process failed on the benchmark images: {summary.failed}")
    return {"seconds": seconds, "mp_per_s": len(images) * side * side / 1e6 / seconds,
            "n_images": len(images)}


# ---------------------------------------------------------------------------------------------
# synthetic GeoTIFFs


def write_synthetic_geotiff(path: Path, side: int, *, seed: int = 0, block: int = 1024) -> Path:
    """A georeferenced RGB GeoTIFF (tiled, deflate): smooth masonry-like texture, a few cracks.

    Written block by block, so a 16k x 16k image never exists in memory.
    """
    rng = np.random.default_rng(seed)
    coarse_step = 64
    coarse = rng.random((side // coarse_step + 3, side // coarse_step + 3)).astype(np.float32)
    cracks = []  # polylines as (r0, c0, r1, c1) segments
    for _ in range(6):
        r, c = rng.uniform(0, side, 2)
        angle = rng.uniform(0, math.pi)
        for _ in range(12):
            angle += rng.normal(0, 0.3)
            step = side / 20
            r1, c1 = r + step * math.sin(angle), c + step * math.cos(angle)
            cracks.append((r, c, r1, c1))
            r, c = r1, c1
    profile = dict(
        driver="GTiff",
        height=side,
        width=side,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(0.002, 0, 500_000, 0, -0.002, 4_100_000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        photometric="RGB",
    )
    with rasterio.open(path, "w", **profile) as ds:
        for row0 in range(0, side, block):
            for col0 in range(0, side, block):
                rows, cols = min(block, side - row0), min(block, side - col0)
                rr = (np.arange(rows) + row0)[:, None] / coarse_step
                cc = (np.arange(cols) + col0)[None, :] / coarse_step
                smooth = ndimage.map_coordinates(
                    coarse, np.broadcast_arrays(rr, cc), order=1, mode="nearest"
                )
                grey = 150 + 50 * smooth + rng.normal(0, 6, (rows, cols))
                # mortar joints every 64 px make it look like masonry
                grey[((np.arange(rows) + row0) % 64 < 3), :] -= 40
                r_img = np.arange(rows)[:, None] + row0
                c_img = np.arange(cols)[None, :] + col0
                for r0, c0, r1, c1 in cracks:
                    if max(r0, r1) < row0 - 5 or min(r0, r1) > row0 + rows + 5:
                        continue
                    if max(c0, c1) < col0 - 5 or min(c0, c1) > col0 + cols + 5:
                        continue
                    dr, dc = r1 - r0, c1 - c0
                    t = ((r_img - r0) * dr + (c_img - c0) * dc) / (dr * dr + dc * dc)
                    t = np.clip(t, 0, 1)
                    dist = np.hypot(r_img - (r0 + t * dr), c_img - (c0 + t * dc))
                    grey = np.where(dist < 2.0, 30.0, grey)
                rgb = np.clip(grey, 0, 255).astype(np.uint8)
                ds.write(np.stack([rgb, rgb * 0.95, rgb * 0.9]).astype(np.uint8),
                         window=rasterio.windows.Window(col0, row0, cols, rows))
    return path


def jpeg_copy(source: Path, path: Path, *, quality: int = 90) -> Path:
    """``source`` (an RGB GeoTIFF) as a JPEG photo without georeferencing."""
    from PIL import Image

    with rasterio.open(source) as ds:
        Image.fromarray(np.moveaxis(ds.read(), 0, -1)).save(path, quality=quality)
    return path


# ---------------------------------------------------------------------------------------------
# memory


class PeakRSS:
    """Samples the RSS of this process plus all its children (Dask workers) in a thread.

    ``peak_bytes`` sums RSS, which counts the pages of shared libraries (torch, GDAL) once per
    process; ``peak_pss_bytes`` sums PSS (shared pages split among the processes using them):
    the memory the run actually occupies."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        me = psutil.Process()
        rss = pss = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return rss, pss

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = self._sample()
            self.peak_bytes = max(self.peak_bytes, rss)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        # what this (benchmark) process freed earlier, e.g. writing a synthetic image, is not
        # memory of the run measured next
        release_freed_memory()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------


def engine_mps(
    weights: Path, image: Path, out: Path, config: RunSettings, side: int, *,
    warm_runs: int = 0, before_warm: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Engine MP/s on one image (cluster start-up timed separately).

    The first run includes each worker's model load and oneDNN warm-up; ``warm_runs`` more runs
    of the same image on the same workers give ``warm_mp_per_s`` (a list: the steady state of a
    survey with many images, comparable with the warmed-up model-only figure).
    ``before_warm()`` runs before each of them (the model-only measurement of its pair: the
    engine's workers sit idle meanwhile).
    """
    t = time.perf_counter()
    runs = []
    with Engine(weights, core_px=config.tiling.core_px, halo_px=config.tiling.halo_px,
                precision=config.precision, config=config.engine) as engine:
        engine.start()
        startup = time.perf_counter() - t
        for i in range(1 + warm_runs):
            if i and before_warm is not None:
                before_warm()
            with tqdm(desc=image.name, unit="tile", file=sys.stderr, leave=False) as bar:

                def on_tile_done(event: ProgressEvent) -> None:
                    bar.total = event.total
                    bar.update(event.done - bar.n)

                runs.append(engine.run_image(
                    image,
                    distance_path=out / "d.tif",
                    mask_path=out / "m.tif",
                    progress=on_tile_done,
                ))
    result = runs[0]
    report = {
        "seconds": result.seconds,
        "startup_seconds": startup,
        "mp_per_s": side * side / 1e6 / result.seconds,
        "n_tiles": result.n_tiles,
        "skeleton_pixels": len(result.skeleton),
    }
    if warm_runs:
        report["warm_seconds"] = [r.seconds for r in runs[1:]]
        report["warm_mp_per_s"] = [side * side / 1e6 / r.seconds for r in runs[1:]]
    return report


# ---------------------------------------------------------------------------------------------
# (f) scaling: memory and throughput against image size, throughput against local workers


def write_sparse_geotiff(path: Path, side: int, tmp: Path, *, patch_px: int = 2048) -> Path:
    """A ``side``-square GeoTIFF that is nodata (0) except two textured ``patch_px`` patches.

    Only the patches are written (tiled, deflate, sparse blocks), so a 40k x 40k image is a few
    MB on disk and is made in seconds; the engine skips the all-nodata tiles without a forward.
    """
    patch_px = min(patch_px, side // 4)
    patch = write_synthetic_geotiff(tmp / "patch.tif", patch_px, seed=3)
    profile = dict(
        driver="GTiff", height=side, width=side, count=3, dtype="uint8", nodata=0,
        crs="EPSG:32633", transform=Affine(0.002, 0, 500_000, 0, -0.002, 4_100_000),
        tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
        photometric="RGB",
    )
    offsets = [(0, 0), (side // 2 - patch_px // 2, side // 2 - patch_px // 2)]
    with rasterio.open(patch) as src, rasterio.open(path, "w", **profile) as dst:
        for row0, col0 in offsets:
            for _, window in src.block_windows(1):
                data = np.maximum(src.read(window=window), 1)  # 0 is nodata
                dst.write(data, window=rasterio.windows.Window(
                    col0 + window.col_off, row0 + window.row_off, window.width, window.height))
    patch.unlink()
    return path


def scaling_table(
    weights: Path, tmp: Path, config: RunSettings, *, sizes: list[int], sparse_from: int,
    worker_counts: list[int], workers_size: int, log,
) -> dict[str, object]:
    """Peak RSS and MP/s of ``cracksurvey process`` per image size; engine MP/s per worker count.

    Images of ``sparse_from`` px and more are sparse (:func:`write_sparse_geotiff`); their
    MP/s counts every pixel, nodata included, and ``valid_mp`` says how many were imagery.
    """
    by_size = {}
    for side in sizes:
        folder = tmp / f"scale-{side}"
        folder.mkdir()
        sparse = side >= sparse_from
        log(f"(f) {side}^2 {'sparse ' if sparse else ''}image: writing ...")
        image = (write_sparse_geotiff(folder / f"img{side}.tif", side, folder) if sparse
                 else write_synthetic_geotiff(folder / f"img{side}.tif", side, seed=4))
        log(f"(f) {side}^2: cracksurvey process ...")
        with PeakRSS() as mem:
            run = process_mps(weights, image, folder, config, side)
        record = json.loads((folder / "process-out" / "run.json").read_text())
        [outcome] = record["images"]
        by_size[side] = {
            "sparse": sparse,
            "file_mb": image.stat().st_size / 1e6,
            "valid_mp": outcome["valid_px"] / 1e6,
            "n_cracks": outcome["n_cracks"],
            "seconds": run["seconds"],
            "mp_per_s": run["mp_per_s"],
            "peak_rss_gb": mem.peak_bytes / 1e9,
            "peak_pss_gb": mem.peak_pss_bytes / 1e9,
        }
        image.unlink()
    image = write_synthetic_geotiff(tmp / "workers.tif", workers_size, seed=5)
    by_workers = {}
    for n in worker_counts:
        log(f"(f) {workers_size}^2 on {n} local worker(s) ...")
        cfg = dataclasses.replace(config, engine=EngineConfig(
            workers=n, threads_per_worker=1, torch_threads=max(1, available_cores() // n)))
        with PeakRSS() as mem:
            by_workers[n] = engine_mps(weights, image, tmp, cfg, workers_size)
        by_workers[n]["peak_rss_gb"] = mem.peak_bytes / 1e9
        by_workers[n]["peak_pss_gb"] = mem.peak_pss_bytes / 1e9
    image.unlink()
    return {"sizes": by_size, "workers": by_workers, "workers_size": workers_size}


def print_scaling(r: dict) -> None:
    print("(f) scaling: cracksurvey process on one image (engine + vectorize + CPP + GeoPackage)")
    print("| image | file MB | valid MP | cracks | s | MP/s (all px) | peak RSS GB | peak PSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    for side, v in r["sizes"].items():
        kind = " sparse" if v["sparse"] else ""
        print(f"| {side}^2{kind} | {v['file_mb']:.1f} | {v['valid_mp']:.1f} | {v['n_cracks']} | "
              f"{v['seconds']:.1f} | {v['mp_per_s']:.2f} | {v['peak_rss_gb']:.2f} | "
              f"{v['peak_pss_gb']:.2f} |")
    print()
    print(f"(f) engine on {r['workers_size']}^2 with local workers (1 task each, torch threads "
          "= cores / workers)")
    print("| workers | MP/s | s | start s | peak RSS GB | peak PSS GB |")
    print("|---|---|---|---|---|---|")
    for n, v in r["workers"].items():
        print(f"| {n} | {v['mp_per_s']:.2f} | {v['seconds']:.1f} | {v['startup_seconds']:.1f} | "
              f"{v['peak_rss_gb']:.2f} | {v['peak_pss_gb']:.2f} |")


def run_scaling(args: argparse.Namespace, log) -> int:
    """``--scaling``: only the scaling table (f)."""
    with tempfile.TemporaryDirectory(prefix="cracksurvey-scaling-") as tmpdir:
        tmp = Path(tmpdir)
        weights, _, _, note = resolve_model(args.weights, tmp)
        log(f"model: {note}")
        precision = effective_precision("auto")  # what `cracksurvey process` runs here
        config = RunSettings(TilingConfig(tile_px=args.tile, halo_px=args.halo), precision)
        report = scaling_table(
            weights, tmp, config, sizes=args.sizes, sparse_from=args.sparse_from,
            worker_counts=args.scaling_workers, workers_size=args.workers_size or args.sizes[0],
            log=log,
        )
    report["model"] = note
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(f"model: {note}")
        print_scaling(report)
    return 0


def resolve_model(weights: str | None, tmp: Path) -> tuple[Path, torch.nn.Module, ModelCard, str]:
    path = Path(weights) if weights else default_weights_path()
    if path.with_suffix(".safetensors").exists():
        model, card = load_model(path)
        return path, model, card, f"weights {path}"
    if weights:
        raise SystemExit(f"{path}: weights file not found")
    card = ModelCard("benchmark-random-unet16-w025", "unet16", 0.25, True)
    torch.manual_seed(0)
    model = TernausNet(card.architecture, width=card.width, body_head=card.body_head).eval()
    with torch.no_grad():
        # Random weights output about 0 everywhere, i.e. "all crack", which makes the skeleton
        # stage far slower than on real imagery; a bias at the clip value makes the mask sparse.
        model.final.bias.fill_(card.clip_px)
    card = save_model(model, card, tmp / "random.safetensors")
    note = (
        f"shipped weights {path.name} absent: random-weight TernausNet "
        f"({card.architecture}, width {card.width}, body head, distance bias at clip) stands in; "
        "model speed does not depend on the weight values"
    )
    return tmp / "random.safetensors", model, card, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="model .safetensors (default: the shipped model)")
    parser.add_argument("--tile", type=int, default=1280, help="forward size incl. halo (px)")
    parser.add_argument("--halo", type=int, default=96, help="halo (px)")
    parser.add_argument("--size", type=int, default=4096, help="side of the end-to-end image")
    parser.add_argument("--big", type=int, default=16384, help="side of the memory image")
    parser.add_argument("--pairs", type=int, default=3,
                        help="(c) model-only / warm-engine pairs measured back to back")
    parser.add_argument("--survey-images", type=int, default=4,
                        help="images in the (c) survey run of process (1: skip it)")
    parser.add_argument("--skip-16k", action="store_true", help="skip the memory run (d)")
    parser.add_argument("--skip-layouts", action="store_true", help="skip (e)")
    parser.add_argument("--layout-size", type=int, default=2048, help="image side for (e)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    parser.add_argument("--scaling", action="store_true",
                        help="only (f): memory and MP/s per image size, MP/s per worker count")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 40000],
                        help="(f) image sides")
    parser.add_argument("--sparse-from", type=int, default=20000,
                        help="(f) sides from which the image is sparse (mostly nodata)")
    parser.add_argument("--scaling-workers", type=int, nargs="+", default=[1, 2],
                        help="(f) local worker counts")
    parser.add_argument("--workers-size", type=int, default=None,
                        help="(f) image side for the worker counts [default: the first size]")
    args = parser.parse_args(argv)

    def log(*parts: object) -> None:
        print(*parts, file=sys.stderr, flush=True)

    if args.scaling:
        return run_scaling(args, log)

    report: dict[str, object] = {
        "machine": {
            "cpu": cpu_kind(),
            "cores": available_cores(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_bf16_supported(),
            "amx": cpu_amx_supported(),
            "precision_auto": effective_precision("auto"),
        }
    }
    with tempfile.TemporaryDirectory(prefix="cracksurvey-bench-") as tmpdir:
        tmp = Path(tmpdir)
        weights, model, card, note = resolve_model(args.weights, tmp)
        model = model.eval().to(memory_format=torch.channels_last)
        report["model"] = {
            "note": note,
            "model_id": card.model_id,
            "architecture": card.architecture,
            "width": card.width,
            "parameters": count_parameters(model),
            "gflop_per_mp": flops_per_megapixel(model) / 1e9,
        }
        torch.set_num_threads(available_cores())
        keep_freed_memory()

        log("(a) conv ceiling ...")
        report["ceiling_gflops"] = {p: conv_ceiling(p) for p in PRECISIONS}

        log("(b) model only ...")
        tiling = TilingConfig(tile_px=args.tile, halo_px=args.halo)
        core_px = tiling.core_px
        model_only = {}
        for p in PRECISIONS:
            raw = model_throughput(model, p, tile_px=args.tile)
            gflops = raw * report["model"]["gflop_per_mp"]
            model_only[p] = {
                "raw_mp_per_s": raw,
                "core_mp_per_s": raw * core_px**2 / args.tile**2,
                "gflops": gflops,
                "fraction_of_ceiling": gflops / report["ceiling_gflops"][p],
            }
        report["model_only"] = model_only
        release_freed_memory()  # this process's kept heap is not the engine's memory in (d)

        precision = effective_precision("auto")  # what `cracksurvey process` runs here
        config = RunSettings(tiling, precision)

        log(f"(c) end-to-end {args.size}^2 ({precision}) ...")
        img = write_synthetic_geotiff(tmp / "e2e.tif", args.size)
        out = tmp / "out"
        workers = default_layout()[0]
        grids: list[dict[str, float]] = []
        # pairs measured back to back (model only, then the engine on the warm workers): the
        # machine's speed drifts between minutes, a ratio within a pair does not see it
        e2e = engine_mps(weights, img, out, config, args.size, warm_runs=args.pairs,
                         before_warm=lambda: grids.append(
                             model_only_on_grid(weights, card, args.size, config, workers)))
        e2e["precision"] = precision
        e2e["ratio_to_model_only"] = e2e["mp_per_s"] / model_only[precision]["core_mp_per_s"]
        grid = dict(grids[0], mp_per_s=statistics.median(g["mp_per_s"] for g in grids),
                    all_mp_per_s=[g["mp_per_s"] for g in grids])
        e2e["model_only_on_grid"] = grid
        e2e["ratio_to_model_only_on_grid"] = e2e["mp_per_s"] / grid["mp_per_s"]
        ratios = [w / g["mp_per_s"] for w, g in zip(e2e["warm_mp_per_s"], grids)]
        e2e["warm_ratios_to_model_only_on_grid"] = ratios
        e2e["warm_ratio_to_model_only_on_grid"] = statistics.median(ratios)
        log(f"(c) cracksurvey process on the {args.size}^2 image ...")
        full = process_mps(weights, img, tmp, config, args.size)
        full["ratio_to_model_only_on_grid"] = full["mp_per_s"] / grid["mp_per_s"]
        e2e["process"] = full
        if args.survey_images > 1:
            log(f"(c) cracksurvey process on a survey of {args.survey_images} {args.size}^2 images, "
                "with and without the early start of the next image ...")
            imgs = [img] + [write_synthetic_geotiff(tmp / f"e2e-{i}.tif", args.size, seed=10 + i)
                            for i in range(1, args.survey_images)]
            survey = {}
            def ratios(run: dict) -> dict:
                run["ratio_to_model_only_on_grid"] = run["mp_per_s"] / grid["mp_per_s"]
                # the cluster start is paid once per run, whatever the survey's size
                steady = run["n_images"] * args.size**2 / 1e6 / (
                    run["seconds"] - e2e["startup_seconds"])
                run["without_cluster_start_mp_per_s"] = steady
                run["without_cluster_start_ratio"] = steady / grid["mp_per_s"]
                return run

            for prefetch in (True, False):
                survey["prefetch" if prefetch else "no_prefetch"] = ratios(
                    process_mps(weights, imgs, tmp, config, args.size, prefetch=prefetch))
            # the same images as JPEG photos without georeferencing, as façade surveys come:
            # the façade semantics network and the crack verifier run on each (not on a map)
            photos = [jpeg_copy(p, tmp / f"photo-{i}.jpg") for i, p in enumerate(imgs)]
            survey["photos"] = ratios(
                process_mps(weights, photos, tmp, config, args.size, name="photos"))
            e2e["process_survey"] = survey
            for extra in imgs[1:] + photos:
                extra.unlink()
        report["end_to_end"] = e2e
        img.unlink()

        if not args.skip_layouts:
            log(f"(e) layouts on {args.layout_size}^2 ...")
            img = write_synthetic_geotiff(tmp / "layout.tif", args.layout_size, seed=1)
            cores = available_cores()
            layouts = {
                f"1 worker x 1 task, torch {cores} threads": dict(
                    workers=1, threads_per_worker=1, torch_threads=cores
                ),
                f"1 worker x {cores} tasks, torch 1 thread": dict(
                    workers=1, threads_per_worker=cores, torch_threads=1
                ),
                f"{cores} workers x 1 task, torch 1 thread": dict(
                    workers=cores, threads_per_worker=1, torch_threads=1
                ),
            }
            report["layouts"] = {}
            for name, kw in layouts.items():
                cfg = dataclasses.replace(config, engine=EngineConfig(**kw))
                with PeakRSS() as mem:
                    res = engine_mps(weights, img, out, cfg, args.layout_size)
                res["peak_rss_gb"] = mem.peak_bytes / 1e9
                res["peak_pss_gb"] = mem.peak_pss_bytes / 1e9
                report["layouts"][name] = res
            img.unlink()

        if not args.skip_16k:
            log(f"(d) memory on {args.big}^2 (writing the image) ...")
            img = write_synthetic_geotiff(tmp / "big.tif", args.big, seed=2)
            log(f"(d) memory on {args.big}^2 (processing) ...")
            with PeakRSS() as mem:
                big = engine_mps(weights, img, out, config, args.big)
            big["peak_rss_gb"] = mem.peak_bytes / 1e9
            big["peak_pss_gb"] = mem.peak_pss_bytes / 1e9
            big["image_gb_float32"] = args.big**2 * 4 / 1e9
            report["memory_16k"] = big
            img.unlink()

    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print_table(report, args)
    return 0


def print_table(r: dict, args: argparse.Namespace) -> None:
    m = r["model"]
    mach = r["machine"]
    print(f"cpu:     {mach['cpu']}; {mach['cores']} cores; precision auto -> {mach['precision_auto']} "
          f"(native bf16 {mach['native_bf16']}, AMX {mach['amx']})")
    print(f"machine: {mach}")
    print(f"model:   {m['note']}")
    print(f"         {m['architecture']} width {m['width']}, {m['parameters'] / 1e6:.2f} M params, "
          f"{m['gflop_per_mp']:.1f} GFLOP/MP")
    print()
    print("| measure | fp32 | bf16 |")
    print("|---|---|---|")
    c = r["ceiling_gflops"]
    print(f"| (a) conv ceiling, 3x3 256->256 @128^2, GFLOP/s | {c['fp32']:.0f} | {c['bf16']:.0f} |")
    mo = r["model_only"]
    print(f"| (b) model forward {args.tile}^2, raw MP/s | {mo['fp32']['raw_mp_per_s']:.2f} | "
          f"{mo['bf16']['raw_mp_per_s']:.2f} |")
    print(f"| (b) model, core MP/s (halo {args.halo}) | {mo['fp32']['core_mp_per_s']:.2f} | "
          f"{mo['bf16']['core_mp_per_s']:.2f} |")
    print(f"| (b) model GFLOP/s (fraction of ceiling) | {mo['fp32']['gflops']:.0f} "
          f"({mo['fp32']['fraction_of_ceiling']:.0%}) | {mo['bf16']['gflops']:.0f} "
          f"({mo['bf16']['fraction_of_ceiling']:.0%}) |")
    if not r["machine"]["native_bf16"]:
        print("| note | | bf16 is emulated on this CPU (slower than fp32; auto runs fp32) |")
    e = r["end_to_end"]
    print()
    print(f"(c) end-to-end {args.size}^2 ({e['precision']}): {e['mp_per_s']:.2f} MP/s "
          f"({e['seconds']:.1f} s, {e['n_tiles']} tiles, "
          f"cluster start {e['startup_seconds']:.1f} s); "
          f"end-to-end / model-only core = {e['ratio_to_model_only']:.0%}")
    g = e["model_only_on_grid"]
    listed = ", ".join(f"{v:.2f}" for v in g["all_mp_per_s"])
    print(f"    model only on the same grid ({g['n_tiles']} tiles, {g['forward_mp']:.1f} MP forward) "
          f"and layout ({g['workers']} workers x 1 thread, run at once): median "
          f"{g['mp_per_s']:.2f} MP/s ({listed}); first engine run / that = "
          f"{e['ratio_to_model_only_on_grid']:.0%}")
    warm = ", ".join(f"{v:.2f}" for v in e["warm_mp_per_s"])
    pairs = ", ".join(f"{v:.0%}" for v in e["warm_ratios_to_model_only_on_grid"])
    print(f"    engine again on the same workers (warm: model loaded, oneDNN primed, as for every "
          f"image after the first of a survey), each run right after a model-only run: "
          f"{warm} MP/s; engine / model only per pair: {pairs}, median "
          f"**{e['warm_ratio_to_model_only_on_grid']:.0%}**")
    f = e["process"]
    print(f"    cracksurvey process (engine + vectorize + GeoPackage + cluster start): "
          f"{f['mp_per_s']:.2f} MP/s ({f['seconds']:.1f} s); "
          f"/ model only on the grid = {f['ratio_to_model_only_on_grid']:.0%}")
    if "process_survey" in e:
        for name, label in (
            ("prefetch", "next image started early (default)"),
            ("no_prefetch", "without the early start"),
            ("photos", "the same as JPEG photos (façade semantics and verifier run)"),
        ):
            if name not in e["process_survey"]:
                continue
            v = e["process_survey"][name]
            print(f"    cracksurvey process, survey of {v['n_images']} images, {label}: "
                  f"{v['mp_per_s']:.2f} MP/s ({v['seconds']:.1f} s incl. cluster start); "
                  f"/ model only on the grid = {v['ratio_to_model_only_on_grid']:.0%}; "
                  f"without the cluster start ({e['startup_seconds']:.1f} s, once per run) "
                  f"{v['without_cluster_start_mp_per_s']:.2f} MP/s = "
                  f"{v['without_cluster_start_ratio']:.0%}")
    if "memory_16k" in r:
        b = r["memory_16k"]
        print(f"(d) {args.big}^2: peak RSS {b['peak_rss_gb']:.2f} GB incl. workers "
              f"(PSS {b['peak_pss_gb']:.2f} GB: shared libraries counted once) "
              f"(the image as float32 would be {b['image_gb_float32']:.1f} GB); "
              f"{b['mp_per_s']:.2f} MP/s, {b['seconds']:.0f} s")
    if "layouts" in r:
        print()
        print(f"(e) local cluster layouts, {args.layout_size}^2:")
        print("| layout | MP/s | s | start s | peak RSS GB | peak PSS GB |")
        print("|---|---|---|---|---|---|")
        for name, v in r["layouts"].items():
            print(f"| {name} | {v['mp_per_s']:.2f} | {v['seconds']:.1f} | "
                  f"{v['startup_seconds']:.1f} | {v['peak_rss_gb']:.2f} | "
                  f"{v['peak_pss_gb']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
