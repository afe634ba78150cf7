"""Memory is flat after the engine: a huge image's sparse skeleton is never densified."""

from __future__ import annotations

import tracemalloc

import numpy as np
from affine import Affine

from cracksurvey.vectorize import vectorize_skeleton


def diagonal(row0: int, col0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    steps = np.arange(n)
    return row0 + steps, col0 + steps


def test_vectorizing_a_40k_image_allocates_per_skeleton_pixel_not_per_image_pixel() -> None:
    side = 40_000  # a dense bool mask of it would be 1.6 GB, float32 6.4 GB
    parts = [
        diagonal(5, 5, 300),
        diagonal(side - 400, side - 400, 300),
        diagonal(side // 2, 10, 300),
    ]
    rows = np.concatenate([r for r, _ in parts]).astype(np.int64)
    cols = np.concatenate([c for _, c in parts]).astype(np.int64)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    width = np.full(rows.size, 2.0, np.float32)
    distance = np.zeros(rows.size, np.float32)
    kwargs = dict(
        transform=Affine(0.002, 0, 0, 0, -0.002, side * 0.002),
        width_px=width,
        distance_px=distance,
        threshold_px=1.0,
        pixel_size_m=0.002,
        min_spur_px=8,
        min_crack_length_px=15,
        smoothing_px=1.0,
    )
    vectorize_skeleton(
        rows[:10], cols[:10], **{**kwargs, "width_px": width[:10], "distance_px": distance[:10]}
    )  # warm up numba
    tracemalloc.start()
    try:
        cracks, branches = vectorize_skeleton(rows, cols, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cracks) == 3
    assert np.allclose(sorted(cracks["length_px"]), 299 * np.sqrt(2), rtol=0.01)
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB"
