"""Engine: stitched COGs equal the reference, Dask equals synchronous, bad input is one error."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage
from torch import nn

from cracksurvey.config import EngineConfig
from cracksurvey.engine import Engine, run_image
from cracksurvey.engine.cluster import available_cores
from cracksurvey.engine.worker import QuickExitPlugin
from cracksurvey.errors import InputRasterError
from cracksurvey.io.cog import TiledRasterWriter
from cracksurvey.io.raster import describe_raster
from cracksurvey.model import ModelCard, TernausNet, save_model
from cracksurvey.predict import HEAP_ENVIRON, torch_threads
from cracksurvey.tiling import predict_untiled

CRS = "EPSG:32633"
TRANSFORM = Affine(0.005, 0.0, 500_000.0, 0.0, -0.005, 4_100_000.0)  # 5 mm pixels


class TinyNet(nn.Module):
    """Stand-in with a receptive field of 5 px: stitching with a 32 px halo is exact."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c2(F.relu(self.c1(x)))
        return torch.cat([F.relu(out[:, :1] + 1.5), out[:, 1:]], 1)


TINY_CARD = ModelCard("tiny", "unet16", 1.0, True, threshold_px=1.2)


def facade(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Smooth texture with a dark crack polyline drawn across tile boundaries."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((rows, cols)), 4)
    grey = ((smooth - smooth.mean()) * 2000 + 170).clip(60, 230)
    rr = np.arange(rows)
    cc = (0.2 * cols + 0.6 * cols * rr / rows).astype(int)
    for d in (-1, 0, 1):
        grey[rr, np.clip(cc + d, 0, cols - 1)] = 25
    return np.repeat(grey[None].astype(np.uint8), 3, axis=0)


def write_geotiff(path: Path, array: np.ndarray, **extra) -> Path:
    profile = dict(
        driver="GTiff",
        height=array.shape[1],
        width=array.shape[2],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=CRS,
        transform=TRANSFORM,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
    return path


def run(engine: Engine, image: Path, out_dir: Path, tag: str):
    return engine.run_image(
        image, distance_path=out_dir / f"d{tag}.tif", mask_path=out_dir / f"m{tag}.tif"
    )


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A random-weight TernausNet (width 1/16, body head) saved with its card."""
    torch.manual_seed(0)
    model = TernausNet("unet16", width=1 / 16, body_head=True)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():
        model.final.bias.fill_(1.0)
    path = tmp_path_factory.mktemp("weights") / "w16.safetensors"
    save_model(model, ModelCard("w16", "unet16", 1 / 16, True, threshold_px=0.9), path)
    return path


def test_synchronous_engine_writes_georeferenced_cogs_equal_to_untiled(tmp_path):
    img = facade(150, 190)
    src = write_geotiff(tmp_path / "facade.tif", img)
    model = TinyNet().eval()
    calls = []
    result = run_image(
        src,
        distance_path=tmp_path / "out" / "d.tif",
        mask_path=tmp_path / "out" / "m.tif",
        model=(model, TINY_CARD),
        core_px=64,
        halo_px=32,
        precision="fp32",
        synchronous=True,
        progress=lambda event: calls.append((event.done, event.total)),
    )
    assert result.n_tiles == 9 and calls == [(i, 9) for i in range(1, 10)]

    for path in (result.distance_path, result.mask_path):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
        header = describe_raster(path)
        assert header.crs == rasterio.crs.CRS.from_string(CRS)
        assert header.transform == TRANSFORM
        assert (header.height, header.width) == (150, 190)
    assert np.isnan(describe_raster(result.distance_path).nodata)
    assert describe_raster(result.mask_path).nodata == 255

    ref, _ = predict_untiled(img, model, TINY_CARD, halo_px=32, precision="fp32")
    distance = read_band(result.distance_path)
    np.testing.assert_allclose(distance, ref, rtol=0, atol=1e-5)
    mask = read_band(result.mask_path)
    np.testing.assert_array_equal(mask, (ref <= TINY_CARD.threshold_px).astype(np.uint8))

    sk = result.skeleton
    assert len(sk) > 50  # the drawn crack
    assert (mask[sk.rows, sk.cols] == 1).all()  # image coordinates, on the mask
    assert np.all(np.diff(sk.rows * 190 + sk.cols) > 0)  # row-major, no duplicates at seams
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.tif", "m.tif"]


def test_local_cluster_matches_synchronous_and_survives_a_bad_image(tmp_path, weights):
    img = facade(130, 170, seed=1)
    src = write_geotiff(tmp_path / "facade.tif", img)
    tiling = dict(core_px=64, halo_px=64, precision="fp32")
    config = EngineConfig(processes=False, torch_threads=1, max_in_flight=2)
    with Engine(weights, **tiling, config=config, synchronous=True) as engine:
        sync = run(engine, src, tmp_path, "0")
        assert engine.client_torch_threads is None  # the client has every core
    truncated = tmp_path / "truncated.tif"
    write_geotiff(truncated, facade(130, 170, seed=2))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    with Engine(weights, **tiling, config=config) as engine:
        with pytest.raises(InputRasterError, match="truncated.tif"):
            run(engine, truncated, tmp_path, "x")
        # the engine is still usable; nothing was left behind for the bad image
        dask = run(engine, src, tmp_path, "1")
        # the client's own networks get the cores the workers' tasks leave (at least one)
        workers = engine._client.scheduler_info()["workers"].values()
        slots = sum(w["nthreads"] for w in workers)  # torch_threads=1 per task
        assert engine.client_torch_threads == max(1, available_cores() - slots)
    assert not list(tmp_path.glob("*x.tif*")) and not list(tmp_path.glob(".*"))
    assert dask.n_tiles == sync.n_tiles == 9
    np.testing.assert_allclose(
        read_band(dask.distance_path), read_band(sync.distance_path), atol=1e-6
    )
    np.testing.assert_array_equal(read_band(dask.mask_path), read_band(sync.mask_path))
    np.testing.assert_array_equal(dask.skeleton.rows, sync.skeleton.rows)
    np.testing.assert_array_equal(dask.skeleton.cols, sync.skeleton.cols)


def test_next_image_starts_early_and_gives_the_same_results(tmp_path, weights):
    """run_image(A, next_image=B) submits B's first tiles at A's end; B's run uses them."""
    a = write_geotiff(tmp_path / "a.tif", facade(130, 170, seed=1))
    b = write_geotiff(tmp_path / "b.tif", facade(150, 140, seed=5))
    c = write_geotiff(tmp_path / "c.tif", facade(90, 100, seed=6))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    tiling = dict(core_px=64, halo_px=64, precision="fp32")
    config = EngineConfig(processes=False, torch_threads=1, max_in_flight=3)
    with Engine(weights, **tiling, config=config, synchronous=True) as engine:
        ref_b = run(engine, b, tmp_path, "b0")
        ref_c = run(engine, c, tmp_path, "c0")
    with Engine(weights, **tiling, config=config) as engine:
        submitted: list[str] = []
        submit = engine._submit_tile

        def counting(info, tile, bands, targets=None):
            submitted.append(Path(info.path).name)
            return submit(info, tile, bands, targets)

        engine._submit_tile = counting
        engine.run_image(
            a, distance_path=tmp_path / "da.tif", mask_path=tmp_path / "ma.tif", next_image=b
        )
        started = submitted.count("b.tif")
        assert 1 <= started <= 3 and len(engine._prefetch.futures) == started
        got_b = run(engine, b, tmp_path, "b1")
        assert submitted.count("b.tif") == got_b.n_tiles  # none submitted twice
        # a next image that is not the one run next is cancelled; an unreadable one is ignored
        engine.run_image(
            b, distance_path=tmp_path / "db2.tif", mask_path=tmp_path / "mb2.tif", next_image=a
        )
        got_c = run(engine, c, tmp_path, "c1")
        engine.run_image(
            c, distance_path=tmp_path / "dc2.tif", mask_path=tmp_path / "mc2.tif", next_image=bad
        )
        assert engine._prefetch.header is None and engine._prefetch.futures == []
    for got, ref in ((got_b, ref_b), (got_c, ref_c)):
        np.testing.assert_allclose(
            read_band(got.distance_path), read_band(ref.distance_path), atol=1e-6
        )
        np.testing.assert_array_equal(read_band(got.mask_path), read_band(ref.mask_path))
        np.testing.assert_array_equal(got.skeleton.rows, ref.skeleton.rows)
        np.testing.assert_array_equal(got.skeleton.cols, ref.skeleton.cols)


def test_external_scheduler_with_an_in_memory_model(tmp_path):
    from distributed import LocalCluster

    img = facade(100, 120, seed=4)
    src = write_geotiff(tmp_path / "facade.tif", img)
    pair = (TinyNet().eval(), TINY_CARD)
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
    )
    config = EngineConfig(scheduler=cluster.scheduler_address)
    with cluster, Engine(pair, core_px=64, halo_px=32, precision="fp32", config=config) as engine:
        res = run(engine, src, tmp_path, "")
        assert engine.client_torch_threads is None  # the workers run elsewhere
    ref, _ = predict_untiled(img, pair[0], TINY_CARD, halo_px=32, precision="fp32")
    np.testing.assert_allclose(read_band(res.distance_path), ref, rtol=0, atol=1e-5)


def test_worker_processes_load_the_model_once_and_match_synchronous(tmp_path, weights):
    src = write_geotiff(tmp_path / "facade.tif", facade(100, 140, seed=3))
    tiling = dict(core_px=64, halo_px=64, precision="fp32")
    config = EngineConfig(workers=1, threads_per_worker=1, torch_threads=1)
    sync = run_image(
        src,
        distance_path=tmp_path / "d0.tif",
        mask_path=tmp_path / "m0.tif",
        model=weights,
        **tiling,
        config=config,
        synchronous=True,
    )
    environ_before = {k: os.environ.get(k) for k in HEAP_ENVIRON}
    with Engine(weights, **tiling, config=config) as engine:
        for i in (1, 2):
            out = run(engine, src, tmp_path, str(i))
        cache_sizes = engine._client.run(
            eval, "len(__import__('cracksurvey.engine.worker').engine.worker._MODELS)"
        )
        threads = engine._client.run(eval, "__import__('torch').get_num_threads()")
        environ = engine._client.run(eval, "dict(__import__('os').environ)")
        kept = engine._client.run(eval, "__import__('cracksurvey.predict').predict._HEAP_KEPT")
        plugins = engine._client.run(lambda dask_worker: sorted(dask_worker.plugins))
        callbacks = engine._client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks))
        processes = [nanny.process.process for nanny in engine._cluster.workers.values()]
    # no statistical profiler sampling the tile tasks (nobody reads it; it costs CPU)
    assert [any("profile" in name for name in names) for names in callbacks.values()] == [False]
    # local worker processes leave at once after the clean close, with status 0
    assert [QuickExitPlugin.name in names for names in plugins.values()] == [True]
    assert [p.exitcode for p in processes] == [0]
    assert list(cache_sizes.values()) == [1]  # one model per worker, loaded once for 2 images
    assert list(threads.values()) == [1]  # set explicitly in the worker
    # glibc keeps freed memory for the next tile: set at the worker's start and at its first tile
    (worker_environ,) = environ.values()
    assert {k: worker_environ.get(k) for k in HEAP_ENVIRON} == HEAP_ENVIRON
    # ... and only there: this process's environment is as it was (no MALLOC_* leaked to
    # the programs it starts later)
    assert {k: os.environ.get(k) for k in HEAP_ENVIRON} == environ_before
    assert list(kept.values()) == [platform.libc_ver()[0] == "glibc"]
    np.testing.assert_allclose(
        read_band(out.distance_path), read_band(sync.distance_path), atol=1e-6
    )


def test_rgba_nodata_and_16bit_inputs(tmp_path):
    img = facade(96, 120)
    alpha = np.full((1, 96, 120), 255, np.uint8)
    alpha[0, :, :40] = 0
    rgba = write_geotiff(
        tmp_path / "rgba.tif", np.concatenate([img, alpha]), photometric="RGB", alpha="YES"
    )
    assert describe_raster(rgba).alpha_band == 3
    engine = Engine((TinyNet().eval(), TINY_CARD), core_px=64, halo_px=32, synchronous=True)
    res = engine.run_image(rgba, distance_path=tmp_path / "d.tif", mask_path=tmp_path / "m.tif")
    distance, mask = read_band(res.distance_path), read_band(res.mask_path)
    assert np.isnan(distance[:, :40]).all() and (mask[:, :40] == 255).all()
    assert np.isfinite(distance[:, 40:]).all() and set(np.unique(mask[:, 40:])) <= {0, 1}
    assert (res.skeleton.cols >= 40).all()

    u16 = write_geotiff(tmp_path / "u16.tif", img[:1].astype(np.uint16) * 200 + 1000, crs=None)
    res = engine.run_image(u16, distance_path=tmp_path / "d16.tif", mask_path=tmp_path / "m16.tif")
    assert np.isfinite(read_band(res.distance_path)).all() and len(res.skeleton) > 20
    assert describe_raster(res.distance_path).crs is None


def test_unreadable_images_raise_one_clear_error(tmp_path):
    bad = tmp_path / "not_a_raster.tif"
    bad.write_bytes(b"this is not a tiff")
    engine = Engine((TinyNet().eval(), TINY_CARD), synchronous=True)
    with pytest.raises(InputRasterError, match=r"not_a_raster\.tif: cannot be opened"):
        engine.run_image(bad, distance_path=tmp_path / "d.tif", mask_path=tmp_path / "m.tif")
    with pytest.raises(InputRasterError, match="missing.tif"):
        run(engine, tmp_path / "missing.tif", tmp_path, "")
    assert isinstance(InputRasterError("x"), OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_raster.tif"]


def test_writer_discards_everything_on_error_and_checks_windows(tmp_path):
    out = tmp_path / "d.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with TiledRasterWriter(out, height=10, width=10, transform=TRANSFORM, crs=CRS) as writer:
            writer.write((0, 5, 0, 5), np.zeros((5, 5), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with TiledRasterWriter(out, height=10, width=10, transform=TRANSFORM, crs=CRS) as writer:
        with pytest.raises(ValueError, match="does not fit"):
            writer.write((0, 5, 0, 5), np.zeros((4, 5), np.float32))
        with pytest.raises(ValueError, match="outside"):
            writer.write((8, 12, 0, 5), np.zeros((4, 5), np.float32))
        writer.write((0, 10, 0, 10), np.ones((10, 10), np.float32))
    assert (read_band(out) == 1).all()


def test_writer_makes_a_cog_with_overviews_from_windows(tmp_path):
    out = tmp_path / "big.tif"
    with TiledRasterWriter(out, height=700, width=1100, transform=TRANSFORM, crs=CRS) as writer:
        for row0 in range(0, 700, 300):  # windows not aligned with the 512 px blocks
            for col0 in range(0, 1100, 300):
                rows, cols = min(300, 700 - row0), min(300, 1100 - col0)
                value = np.full((rows, cols), row0 + col0, np.float32)
                writer.write((row0, row0 + rows, col0, col0 + cols), value)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4] and ds.block_shapes[0] == (512, 512)
        assert ds.profile["compress"] == "zstd"
        assert ds.read(1)[650, 1050] == 600 + 900


def write_in_windows(writer: TiledRasterWriter, data: np.ndarray, step: int) -> None:
    """Write ``data`` through ``writer`` in square windows of ``step`` px, row by row."""
    h, w = data.shape
    for row0 in range(0, h, step):
        for col0 in range(0, w, step):
            window = (row0, min(row0 + step, h), col0, min(col0 + step, w))
            writer.write(window, data[window[0] : window[1], window[2] : window[3]])


def block_nanmean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean of the valid pixels of every f x f block (partial blocks at the far edges)."""
    rows, cols = -(-a.shape[0] // f), -(-a.shape[1] // f)
    padded = np.full((rows * f, cols * f), np.nan, np.float64)
    padded[: a.shape[0], : a.shape[1]] = a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        return np.nanmean(padded.reshape(rows, f, cols, f), axis=(1, 3))


@pytest.mark.parametrize("step", [448, 298, 301])  # aligned to 64, to 2 only, to nothing
def test_writer_overviews_are_the_block_means_of_the_valid_pixels(tmp_path, step):
    """Average overviews built as windows arrive (or derived when windows do not line up with
    a level) are the NaN-aware block means: the first level exactly, coarser ones within what
    averaging averages changes. Windows not aligned even to 2 px leave the overviews to GDAL,
    which also fills blocks next to nodata (so they are compared loosely)."""
    by_gdal = step % 2 == 1
    rng = np.random.default_rng(5)
    h, w = 1301, 2090  # odd sizes: partial blocks at the far edges; overviews 2, 4 and 8
    data = ndimage.gaussian_filter(rng.random((h, w)), 3).astype(np.float32) * 20
    data[100:340, 50:177] = np.nan  # nodata holes not aligned with anything
    data[rng.random((h, w)) < 0.01] = np.nan
    out = tmp_path / "d.tif"
    with TiledRasterWriter(out, height=h, width=w, transform=TRANSFORM, crs=CRS) as writer:
        write_in_windows(writer, data, step)
    valid, errors, warns = cog_validate(str(out), strict=True)
    assert valid and not warns, (errors, warns)
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4, 8] and ds.crs == CRS and ds.transform == TRANSFORM
        np.testing.assert_array_equal(ds.read(1), data)
        for f in ds.overviews(1):
            level = ds.read(1, out_shape=(-(-h // f), -(-w // f)))
            expected = block_nanmean(data, f)
            if by_gdal:  # GDAL weighs fractional source pixels when a size is odd
                assert np.nanmean(np.abs(level - expected)) < 0.5, f
                continue
            assert np.array_equal(np.isnan(level), np.isnan(expected)), f
            tolerance = 1e-4 if f == 2 else 0.5  # coarser levels may average the averages
            np.testing.assert_allclose(level, expected, atol=tolerance, equal_nan=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tif"]  # no temporary left


def _centre_pick(a: np.ndarray, f: int) -> np.ndarray:
    """Every f x f block's centre pixel (offset f // 2, clamped at the far edges)."""
    rows = np.minimum(np.arange(0, a.shape[0], f) + f // 2, a.shape[0] - 1)
    cols = np.minimum(np.arange(0, a.shape[1], f) + f // 2, a.shape[1] - 1)
    return a[np.ix_(rows, cols)]


@pytest.mark.parametrize("step", [448, 298, 301])  # aligned to 64, to 2 only, to nothing
def test_writer_mask_overviews_take_block_centres(tmp_path, step):
    """Nearest overviews of a class raster (the mask) built as windows arrive are the block
    centres' pixels; levels the windows are not aligned to take every other pixel of the level
    below. Classes are never blended, nodata (255) stays nodata, and the COG is valid. Windows
    not aligned even to 2 px leave the overviews to GDAL."""
    rng = np.random.default_rng(6)
    h, w = 1301, 2090
    data = (ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.5).astype(np.uint8)
    data[100:340, 50:177] = 255
    out = tmp_path / "m.tif"
    with TiledRasterWriter(
        out,
        height=h,
        width=w,
        transform=TRANSFORM,
        crs=CRS,
        dtype="uint8",
        nodata=255,
        overview_resampling="nearest",
    ) as writer:
        write_in_windows(writer, data, step)
    valid, errors, warns = cog_validate(str(out), strict=True)
    assert valid and not warns, (errors, warns)
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4, 8] and ds.nodata == 255 and ds.dtypes[0] == "uint8"
        np.testing.assert_array_equal(ds.read(1), data)
        finer = data
        for f in ds.overviews(1):
            level = ds.read(1, out_shape=(-(-h // f), -(-w // f)))
            assert set(np.unique(level)) <= {0, 1, 255}, f
            if step % 2:  # GDAL's own: only no blending and the nodata block
                assert (level[110 // f : 330 // f, 60 // f : 170 // f] == 255).all()
                continue
            on_the_fly = step % f == 0
            finer = _centre_pick(data, f) if on_the_fly else _centre_pick(finer, 2)
            np.testing.assert_array_equal(level, finer, err_msg=f"factor {f}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]  # no temporary left


def _write_shared(shared, window, array) -> None:  # runs in another process
    shared.write(window, array)


def test_writer_takes_windows_written_by_another_process(tmp_path):
    """A window another process writes into the raw temporary file (as a local Dask worker
    does) and announces with ``written`` gives the same COG, overviews included, as the same
    window passed to ``write``; pixels no window covered are nodata, not zero."""
    import multiprocessing

    rng = np.random.default_rng(7)
    h, w = 1100, 1300
    data = ndimage.gaussian_filter(rng.random((h, w)), 2).astype(np.float32) * 20
    data[:, 1200:] = np.nan  # never written: must come out as nodata
    windows = [
        (r, min(r + 448, h), c, min(c + 448, 1200))
        for r in range(0, h, 448)
        for c in range(0, 1200, 448)
    ]
    outs = {}
    ctx = multiprocessing.get_context("spawn")
    for how in ("write", "shared"):
        out = outs[how] = tmp_path / f"{how}.tif"
        with TiledRasterWriter(out, height=h, width=w, transform=TRANSFORM, crs=CRS) as writer:
            assert writer.shared is not None
            for k, (r0, r1, c0, c1) in enumerate(windows):
                part = data[r0:r1, c0:c1]
                if how == "write" or k % 2:
                    writer.write((r0, r1, c0, c1), part)
                    continue
                args = (writer.shared, (r0, r1, c0, c1), part)
                proc = ctx.Process(target=_write_shared, args=args)
                proc.start()
                proc.join()
                assert proc.exitcode == 0
                writer.written((r0, r1, c0, c1))
    valid, errors, warns = cog_validate(str(outs["shared"]), strict=True)
    assert valid and not warns, (errors, warns)
    with rasterio.open(outs["write"]) as a, rasterio.open(outs["shared"]) as b:
        np.testing.assert_array_equal(b.read(1), data)
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        for f in a.overviews(1):
            shape = (-(-h // f), -(-w // f))
            np.testing.assert_array_equal(a.read(1, out_shape=shape), b.read(1, out_shape=shape))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.tif", "write.tif"]


def test_writer_above_the_raw_size_writes_a_compressed_geotiff(tmp_path, monkeypatch):
    """Above the raw-file size the temporary file is a compressed GeoTIFF: windows are written
    by this process only (no shared file), with the same COG at the end."""
    import cracksurvey.io.cog as cog

    monkeypatch.setattr(cog, "UNCOMPRESSED_TMP_MAX_BYTES", 1000)
    data = np.arange(700 * 600, dtype=np.float32).reshape(700, 600) / 7
    out = tmp_path / "d.tif"
    with TiledRasterWriter(out, height=700, width=600, transform=TRANSFORM, crs=CRS) as writer:
        assert writer.shared is None
        with pytest.raises(RuntimeError, match="raw temporary file"):
            writer.written((0, 10, 0, 10))
        write_in_windows(writer, data, 320)
    assert cog_validate(str(out), strict=True)[0]
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), data)
        assert ds.overviews(1) == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tif"]


def test_workers_write_into_shared_files_only_on_this_machine(tmp_path):
    from cracksurvey.engine.client import _shared_targets

    with (
        TiledRasterWriter(
            tmp_path / "d.tif", height=10, width=10, transform=TRANSFORM, crs=CRS
        ) as d,
        TiledRasterWriter(
            tmp_path / "m.tif",
            height=10,
            width=10,
            transform=TRANSFORM,
            crs=CRS,
            dtype="uint8",
            nodata=255,
        ) as m,
    ):
        assert _shared_targets(EngineConfig(), d, m) == (d.shared, m.shared)
        assert _shared_targets(EngineConfig(scheduler="tcp://elsewhere:8786"), d, m) is None
        d.write((0, 10, 0, 10), np.zeros((10, 10), np.float32))
        m.write((0, 10, 0, 10), np.zeros((10, 10), np.uint8))


def test_local_workers_share_one_decoded_photo_and_remove_it(tmp_path, weights):
    """Two local workers on a PNG photo map one decoded copy (one decode for the machine),
    give what the synchronous engine gives, and the copy is gone once the engine closes."""
    from PIL import Image

    from cracksurvey.engine.decoded import _BASES, file_stem, image_key, release_shared

    src = tmp_path / "photo.png"
    Image.fromarray(np.moveaxis(facade(160, 200, seed=5), 0, -1)).save(src)
    stem = file_stem(repr(image_key(str(src))), (3, 160, 200))
    tiling = dict(core_px=64, halo_px=64, precision="fp32")
    config = EngineConfig(workers=2, threads_per_worker=1, torch_threads=1)
    with Engine(weights, **tiling, config=config) as engine:
        out = run(engine, src, tmp_path, "1")
        maps = engine._client.run(
            eval,
            "[getattr(v, 'filename', None) for v in "
            "__import__('cracksurvey.engine.worker').engine.worker._DECODED.values()]",
        )
    files = {name for names in maps.values() for name in names}
    assert len(maps) == 2 and len(files) == 1, maps  # the same file, mapped by both
    (shared,) = files
    assert shared is not None and Path(shared).stem == stem
    assert not Path(shared).exists()  # removed when the engine let its workers go
    assert not any(list(base.glob(f"*/{stem}.*")) for base in _BASES if base.exists())
    with Engine(weights, **tiling, config=config, synchronous=True) as engine:  # 1 thread too
        sync = run(engine, src, tmp_path, "0")
    release_shared()  # this process's own copy (the synchronous engine's)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a photo's
        np.testing.assert_allclose(
            read_band(out.distance_path), read_band(sync.distance_path), atol=1e-6
        )


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_untiled_images_decoded_once_give_the_windowed_reads(tmp_path, suffix):
    from PIL import Image

    from cracksurvey.engine.worker import _DECODED, read_tile
    from cracksurvey.io.raster import RasterSource
    from cracksurvey.tiling import read_window_reflect, tile_grid

    rng = np.random.default_rng(3)
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(rng.integers(0, 255, (150, 230, 3), dtype=np.uint8)).save(path)
    info = describe_raster(path)
    with RasterSource(path) as source:
        assert source.driver in ("PNG", "JPEG")
        for tile in tile_grid(info.height, info.width, core_px=64, halo_px=32):
            expected = read_window_reflect(source.read, tile.read, info.height, info.width)
            np.testing.assert_array_equal(read_tile(info, tile), expected)
    assert len(_DECODED) == 1  # decoded once, kept for the next tiles


QUICK_EXIT = """
import atexit, logging, sys
from cracksurvey.engine import worker
atexit.register(lambda: print("finalized"))  # an exit handler registered before the plugin's
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
worker._CLOSED_CLEANLY = sys.argv[2] == "closed"
atexit.register(worker._exit_now_if_closed)
logging.getLogger("w").info("last words")
sys.exit(int(sys.argv[3]))
"""


@pytest.mark.parametrize("closed, status", [("closed", 0), ("open", 0), ("open", 3)])
def test_quick_exit_only_after_a_clean_close_and_flushes_the_log(tmp_path, closed, status):
    log_file = tmp_path / "worker.log"
    done = subprocess.run(
        [sys.executable, "-c", QUICK_EXIT, str(log_file), closed, str(status)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "last words" in log_file.read_text()
    assert done.returncode == status
    # after a clean close the later exit handlers (the interpreter's teardown) are skipped
    assert ("finalized" in done.stdout) == (closed != "closed")


def test_torch_threads_are_set_inside_and_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == before
