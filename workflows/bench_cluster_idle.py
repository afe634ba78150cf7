"""What the local cluster and the client take from the tiles' cores, setting against setting.

    python workflows/bench_cluster_idle.py [--blocks 6] [--size 4096] [--photo-runs 4]

Dask's default polling against ``engine.cluster.WORKER_CONFIG``, each measured for both settings
in one run (this machine is shared; a ratio within one run is what holds):

- **idle**: CPU per second of the client's process (which runs the scheduler and the nannies)
  and of each worker, over 10 s of an idle cluster;
- **warm image**: wall time of one image on a warm engine (the synthetic GeoTIFF of
  ``workflows/benchmark.py``), in blocks of four runs per setting, each block on a fresh
  cluster, the settings' order alternating between blocks; the median per setting.

"Dask defaults" keeps the workers' profiler off (it has been off since before this
measurement); everything else in ``WORKER_CONFIG`` is left at Dask's default.

Then the client's torch threads in ``process`` (``Engine.client_torch_threads`` against torch's
default of a thread per core): ``process`` without the cache on four JPEG photos of the same
size (the façade semantics and the crack verifier run in the client), the two settings
alternating; the median wall time and the semantics and verifier stages of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))


def settings() -> dict[str, dict]:
    import cracksurvey.engine.cluster as cluster

    return {
        "Dask defaults": {"distributed.worker.profile.enabled": False},
        "WORKER_CONFIG": dict(cluster.WORKER_CONFIG),
    }


def engine(config: dict):
    import cracksurvey.engine.cluster as cluster
    from cracksurvey.config import TilingConfig
    from cracksurvey.engine import Engine
    from cracksurvey.model import default_weights_path
    from cracksurvey.predict import effective_precision

    cluster.WORKER_CONFIG = config  # read when the cluster starts
    tiling = TilingConfig()
    return Engine(default_weights_path(), core_px=tiling.core_px, halo_px=tiling.halo_px,
                  precision=effective_precision("auto"))


def idle_cpu(config: dict, seconds: float = 10.0) -> dict[str, float]:
    """CPU ms per second of each process of an idle started engine."""
    with engine(config) as e:
        e.start()
        time.sleep(2)
        me = psutil.Process()
        procs = [me] + me.children(recursive=True)
        before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        time.sleep(seconds)
        after = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
    out = {}
    for i, p in enumerate(procs):
        name = "client" if p.pid == me.pid else f"child {i}"
        out[name] = 1000 * (after[p.pid] - before[p.pid]) / seconds
    return out


def warm_runs(config: dict, image: Path, out: Path, n: int = 4) -> list[float]:
    with engine(config) as e:
        e.start()
        e.run_image(image, distance_path=out / "d.tif", mask_path=out / "m.tif")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            e.run_image(image, distance_path=out / "d.tif", mask_path=out / "m.tif")
            times.append(time.perf_counter() - t)
    return times


def photo_runs(folder: Path, size: int, runs: int) -> None:
    import json
    import shutil

    from benchmark import jpeg_copy, write_synthetic_geotiff

    import cracksurvey.engine.client as client
    from cracksurvey.process import process_survey

    survey = folder / "photos"
    (survey / "images").mkdir(parents=True)
    for i in range(4):
        tif = write_synthetic_geotiff(folder / f"map-{i}.tif", size, seed=10 + i)
        jpeg_copy(tif, survey / "images" / f"photo-{i}.jpg")
    shipped = client.Engine.client_torch_threads
    arms = {"client_torch_threads": shipped, "torch default": property(lambda self: None)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    stages: dict[str, list[str]] = {name: [] for name in arms}
    for run in range(runs):
        for name in list(arms) if run % 2 == 0 else list(arms)[::-1]:
            client.Engine.client_torch_threads = arms[name]  # type: ignore[method-assign]
            out = folder / "out"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            process_survey(survey, out_dir=out, use_cache=False)
            times[name].append(time.perf_counter() - t)
            timing = json.loads((out / "run.json").read_text())["timings_s"]
            stages[name].append(f"{timing['semantics']:.2f}/{timing['verify']:.2f}")
    client.Engine.client_torch_threads = shipped  # type: ignore[method-assign]
    for name, t in times.items():
        print(f"process, 4 photos of {size}², client threads by {name}: median "
              f"{statistics.median(t):.2f} s ({len(t)} runs; semantics/verifier s "
              f"{', '.join(stages[name])})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=6, help="blocks of four warm runs per setting")
    ap.add_argument("--size", type=int, default=4096, help="side of the synthetic image")
    ap.add_argument("--photo-runs", type=int, default=4,
                    help="process runs per client-thread setting (0: skip)")
    args = ap.parse_args()
    from benchmark import cpu_kind, write_synthetic_geotiff

    print(f"cpu: {cpu_kind()}")
    named = settings()
    for name, config in named.items():
        cpu = idle_cpu(config)
        shown = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if v >= 0.5)
        print(f"idle, {name}: CPU ms per s {sum(cpu.values()):.0f} ({shown})")
    with tempfile.TemporaryDirectory() as tmp:
        image = write_synthetic_geotiff(Path(tmp) / "image.tif", args.size)
        times: dict[str, list[float]] = {name: [] for name in named}
        order = list(named)
        for block in range(args.blocks):
            for name in order if block % 2 == 0 else order[::-1]:
                times[name] += warm_runs(named[name], image, Path(tmp))
        for name, t in times.items():
            print(f"warm {args.size}² image, {name}: median {statistics.median(t):.3f} s "
                  f"({len(t)} runs, {min(t):.3f}-{max(t):.3f})")
        if args.photo_runs:
            photo_runs(Path(tmp), args.size, args.photo_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
