"""The compiled CPU kernels of the network (``cracksurvey.cpu_ops``) against PyTorch's operations.

    python workflows/bench_compiled_ops.py [--rounds 3] [--size 4096]

Both settings are measured in one run, alternating (this machine is shared; a ratio within one
run is what holds). ``CRACKSURVEY_COMPILED_OPS=0`` switches the kernels off in every process
started after it is set (the model-only processes, Dask's workers); in this process the module
flag is switched too.

- **forward**: one 1280 x 1280 tile of the shipped model on one thread, in ``precision: auto``
  and in the other precision, input normalisation included (``predict.predict_tile``): the
  minimum over five passes per round, the median of the rounds.
- **model only**: ``workflows/benchmark.py``'s model-only measure (the engine's 16 tiles of a
  ``size``² image on two processes at once), MP/s.
- **engine**: a warm ``size``² GeoTIFF on a fresh local cluster (one image to warm up, then
  three timed), MP/s.
- **process**: ``cracksurvey process`` without the cache on four such JPEG photos (the façade
  semantics and the crack verifier also run the network's operations, in the client).

Every output is the same either way (the kernels give PyTorch's values bit for bit; the tests
check it), so only time is compared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

ENV = "CRACKSURVEY_COMPILED_OPS"
ARMS = {"compiled": "1", "PyTorch": "0"}


def switch(value: str) -> None:
    """Kernels on ("1") or off ("0") here and in every process started from now on."""
    import cracksurvey.cpu_ops as ops

    os.environ[ENV] = value
    ops.ENABLED = value != "0"


def forward_ms(precision: str) -> float:
    from cracksurvey.model import default_weights_path, load_model
    from cracksurvey.predict import keep_freed_memory, predict_tile

    keep_freed_memory()
    torch.set_num_threads(1)
    model, card = load_model(default_weights_path())
    model = model.to(memory_format=torch.channels_last).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (3, 1280, 1280), dtype=np.uint8)
    predict_tile(model, card, rgb, precision=precision)  # type: ignore[arg-type]
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        predict_tile(model, card, rgb, precision=precision)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - t)
    return best * 1000


def engine_mps(image: Path, out: Path, side: int, runs: int = 3) -> float:
    from cracksurvey.config import TilingConfig
    from cracksurvey.engine import Engine
    from cracksurvey.model import default_weights_path
    from cracksurvey.predict import effective_precision

    tiling = TilingConfig()
    with Engine(default_weights_path(), core_px=tiling.core_px, halo_px=tiling.halo_px,
                precision=effective_precision("auto")) as engine:
        engine.start()
        engine.run_image(image, distance_path=out / "d.tif", mask_path=out / "m.tif")
        t = time.perf_counter()
        for _ in range(runs):
            engine.run_image(image, distance_path=out / "d.tif", mask_path=out / "m.tif")
        return runs * side * side / 1e6 / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per setting (alternating)")
    ap.add_argument("--size", type=int, default=4096, help="side of the synthetic images")
    ap.add_argument("--skip-process", action="store_true", help="skip the 4-photo process runs")
    args = ap.parse_args()
    from benchmark import (
        RunSettings,
        cpu_kind,
        jpeg_copy,
        model_only_on_grid,
        write_synthetic_geotiff,
    )

    from cracksurvey.config import TilingConfig
    from cracksurvey.engine import default_layout
    from cracksurvey.model import default_weights_path, load_model
    from cracksurvey.predict import effective_precision
    from cracksurvey.process import process_survey

    auto = effective_precision("auto")
    other = "fp32" if auto == "bf16" else "bf16"
    print(f"cpu: {cpu_kind()}; precision auto -> {auto}")
    weights = default_weights_path()
    _, card = load_model(weights)
    config = RunSettings(TilingConfig(), auto)
    results: dict[str, dict[str, list[float]]] = {arm: {} for arm in ARMS}

    def add(arm: str, key: str, value: float) -> None:
        results[arm].setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        image = write_synthetic_geotiff(tmp / "image.tif", args.size)
        survey = tmp / "photos"
        (survey / "images").mkdir(parents=True)
        for i in range(4):
            tif = write_synthetic_geotiff(tmp / f"map-{i}.tif", args.size, seed=10 + i)
            jpeg_copy(tif, survey / "images" / f"photo-{i}.jpg")
        for r in range(args.rounds):
            for arm in list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]:
                switch(ARMS[arm])
                add(arm, f"forward 1280² {auto}, ms", forward_ms(auto))
                add(arm, f"forward 1280² {other}, ms", forward_ms(other))
                add(arm, "model only, MP/s",
                    model_only_on_grid(weights, card, args.size, config,
                                       default_layout()[0])["mp_per_s"])
                add(arm, "engine (warm), MP/s", engine_mps(image, tmp, args.size))
                if not args.skip_process:
                    out = tmp / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    t = time.perf_counter()
                    process_survey(survey, out_dir=out, use_cache=False)
                    add(arm, "process, 4 photos, s", time.perf_counter() - t)
                print(f"round {r + 1}, {arm}: "
                      + ", ".join(f"{k} {v[-1]:.2f}" for k, v in results[arm].items()),
                      flush=True)
    switch("1")
    print(f"\n| measure ({args.rounds} rounds, median) | compiled | PyTorch | compiled / PyTorch |")
    print("|---|---|---|---|")
    for key in results["compiled"]:
        a = statistics.median(results["compiled"][key])
        b = statistics.median(results["PyTorch"][key])
        print(f"| {key} | {a:.2f} | {b:.2f} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
