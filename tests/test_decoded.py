"""A JPEG or PNG is decoded once per machine: the first process writes it to a shared file,
the others map it; the writer removes it; any file problem falls back to a private decode."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

from cracksurvey.engine import decoded
from cracksurvey.engine.decoded import release_shared, shared_decode

IMAGE = np.random.default_rng(0).integers(0, 255, (3, 40, 50), dtype=np.uint8)


def _must_not_decode() -> np.ndarray:
    raise AssertionError("decoded again")


def _map_in_another_process(base, key: str, out) -> None:
    decoded._BASES = (base,)
    whole = shared_decode(key, IMAGE.shape, _must_not_decode)
    out.put((isinstance(whole, np.memmap), int(whole.sum())))


@pytest.fixture
def shared_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "_BASES", (tmp_path,))
    yield tmp_path
    release_shared()


def test_the_second_process_maps_the_first_ones_decode(shared_dir):
    calls = []

    def decode() -> np.ndarray:
        calls.append(1)
        return IMAGE.copy()

    key = f"photo.jpg|{time.time_ns()}"
    first = shared_decode(key, IMAGE.shape, decode)
    again = shared_decode(key, IMAGE.shape, decode)
    assert calls == [1] and isinstance(first, np.memmap) and not first.flags.writeable
    np.testing.assert_array_equal(first, IMAGE)
    np.testing.assert_array_equal(again, IMAGE)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_map_in_another_process, args=(shared_dir, key, out))
    proc.start()
    mapped, total = out.get(timeout=60)
    proc.join()
    assert proc.exitcode == 0 and mapped and total == int(IMAGE.sum())
    (folder,) = shared_dir.iterdir()
    assert len(list(folder.glob("*.rgb"))) == 1
    # the writer removes its file (a map made before stays readable) and the next need decodes
    release_shared(keep_newest=1)
    assert len(list(folder.glob("*.rgb"))) == 1  # the newest kept when asked
    release_shared()
    assert list(folder.glob("*.rgb")) == [] and list(folder.glob("*.lock")) == []
    np.testing.assert_array_equal(first, IMAGE)
    shared_decode(key, IMAGE.shape, decode)
    assert calls == [1, 1]


def test_release_keeps_the_newest_files(shared_dir):
    for key in "abc":
        shared_decode(key, IMAGE.shape, IMAGE.copy)
    b, c = (shared_decode(key, IMAGE.shape, _must_not_decode) for key in "bc")
    release_shared(keep_newest=2)  # a worker keeps the previous image's file too
    (folder,) = shared_dir.iterdir()
    assert sorted(p.name for p in folder.glob("*.rgb")) == sorted(
        os.path.basename(m.filename) for m in (b, c)
    )


def test_no_room_or_no_folder_decodes_privately(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "_BASES", (tmp_path / "missing" / "deeper",))
    (tmp_path / "missing").write_text("a file, not a folder")
    whole = shared_decode("c", IMAGE.shape, IMAGE.copy)
    assert not isinstance(whole, np.memmap)
    np.testing.assert_array_equal(whole, IMAGE)
    monkeypatch.setattr(decoded, "_BASES", (tmp_path,))
    monkeypatch.setattr(decoded, "_HEADROOM_BYTES", 2**62)  # no file system has that free
    assert not isinstance(shared_decode("d", IMAGE.shape, IMAGE.copy), np.memmap)


def test_decode_errors_are_raised_as_they_are(shared_dir):
    def corrupt() -> np.ndarray:
        raise OSError("photo.jpg: rows 0-40 cannot be decoded")

    with pytest.raises(OSError, match="cannot be decoded"):
        shared_decode("e", IMAGE.shape, corrupt)


def test_files_left_by_a_killed_process_are_swept(shared_dir):
    shared_decode("f", IMAGE.shape, IMAGE.copy)
    (folder,) = shared_dir.iterdir()
    stale = folder / "0123.rgb"
    stale.write_bytes(b"x")
    old = time.time() - decoded.STALE_S - 60
    os.utime(stale, (old, old))
    shared_decode("g", IMAGE.shape, IMAGE.copy)
    assert not stale.exists()


def test_a_folder_others_can_write_to_is_not_used(shared_dir):
    folder = shared_dir / f"cracksurvey-decoded-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # as another user could have made it
    assert not isinstance(shared_decode("h", IMAGE.shape, IMAGE.copy), np.memmap)
    assert list(folder.iterdir()) == []
