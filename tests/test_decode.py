"""The decoded-image disk cache (mprd.data.decode): reuse, keys, recovery, size limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mprd.data import decode
from tests.test_datamodule import H, W, _save


def _images(tmp_path: Path, n: int = 4) -> list[str]:
    return [_save(tmp_path / "img" / f"{k}.jpg", None, seed=k) for k in range(n)]


def test_decode_cache_reuses_saved_copy_without_decoding(tmp_path, monkeypatch):
    paths, cache = _images(tmp_path), tmp_path / "cache"
    first = decode.decode_images_cached(paths, (H, W), cache)
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob(".*"))  # no temporary file left
    assert torch.equal(first, decode.decode_images(paths, (H, W)))

    def fail(*args, **kwargs):
        raise AssertionError("decoded although a cached copy exists")

    monkeypatch.setattr(decode, "decode_images", fail)
    assert torch.equal(decode.decode_images_cached(paths, (H, W), cache), first)


def test_decode_cache_key_follows_files_and_size(tmp_path):
    paths, cache = _images(tmp_path), tmp_path / "cache"
    decode.decode_images_cached(paths, (H, W), cache)
    decode.decode_images_cached(paths, (H // 2, W // 2), cache)  # another size: another entry
    assert len(list(cache.glob("*.npy"))) == 2
    _save(Path(paths[1]), (200, 40, 40))  # a changed file must not be served from the old copy
    fresh = decode.decode_images_cached(paths, (H, W), cache)
    assert len(list(cache.glob("*.npy"))) == 3
    assert torch.equal(fresh, decode.decode_images(paths, (H, W)))


def test_decode_cache_recovers_from_corrupt_file_and_respects_size_limit(tmp_path):
    paths, cache = _images(tmp_path), tmp_path / "cache"
    decode.decode_images_cached(paths, (H, W), cache)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(b"not an npy file")
    again = decode.decode_images_cached(paths, (H, W), cache)
    assert torch.equal(again, decode.decode_images(paths, (H, W)))
    assert np.array_equal(np.load(entry), again.numpy())  # replaced by a good copy
    other = tmp_path / "other"
    decode.decode_images_cached(paths, (H, W), other, max_bytes=len(paths) * 3 * H * W - 1)
    assert not other.exists()  # above max_bytes: nothing written
    decode.decode_images_cached(paths, (H, W), None)  # None: no cache folder at all
