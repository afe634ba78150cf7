"""Compile the compiled (numba) kernels of ``cracksurvey process`` into their on-disk cache.

    python -m cracksurvey.warm

Numba compiles each kernel the first time it runs and keeps the machine code in its cache
(``__pycache__`` beside the module, or the user's cache when that is not writable). Without
this step the first ``process`` after an install spends about 50 s compiling, in every worker
at once, while its progress bar stands still (53 s against 3.7 s for ``examples/street`` on a
2-core Intel Xeon with AMX). ``make venv`` runs it once, so that time is part of the install.

It runs ``process`` synchronously on a small synthetic wall with a dark crack, in bf16 and in
fp32 (the kernels differ by precision), and checks that a crack was found, so the skeleton,
width, vectorization and CPP kernels all ran. Nothing is downloaded and nothing is kept.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["compile_kernels"]


def _wall_with_crack(side: int = 384, seed: int = 0) -> np.ndarray:
    """An RGB (side, side, 3) uint8 plastered wall with a dark wavy crack across it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    wall = 170 + 12 * np.sin(cols / 37.0) * np.cos(rows / 53.0) + rng.normal(0, 4, (side, side))
    centre = side / 2 + 40 * np.sin(cols / 60.0) + 0.3 * (cols - side / 2)
    half_width = 1.0 + 1.5 * cols / side
    depth = np.clip(1.0 - np.abs(rows - centre) / half_width, 0.0, 1.0)
    grey = np.clip(wall * (1.0 - 0.7 * depth), 0, 255)
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def compile_kernels() -> float:
    """Run ``process`` once per precision on a synthetic crack; return the seconds it took.

    Raises RuntimeError when no crack was found (then the width kernels did not run).
    """
    from PIL import Image

    from cracksurvey.process import process_survey

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cracksurvey-warm-") as tmp:
        root = Path(tmp) / "survey"
        (root / "images").mkdir(parents=True)
        Image.fromarray(_wall_with_crack()).save(root / "images" / "wall.png")
        (root / "images.csv").write_text(
            "image,building_id,facade_id,gsd_mm\nwall.png,W,W-1,2.0\n", encoding="utf-8"
        )
        for precision in ("bf16", "fp32"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary = process_survey(
                    root,
                    out_dir=Path(tmp) / f"out-{precision}",
                    overrides={"model": {"precision": precision}},
                    synchronous=True,
                    overwrite=True,
                )
            if summary.exit_code != 0 or not sum(o.n_cracks or 0 for o in summary.images):
                raise RuntimeError(
                    f"cracksurvey.warm: no crack found on the synthetic wall in {precision}; "
                    "the kernels were not all compiled (the first process will compile the rest)"
                )
    return time.perf_counter() - start


def main() -> int:
    print("compiling cracksurvey's kernels into their cache (once per install, about a minute)")
    seconds = compile_kernels()
    print(f"kernels compiled in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
