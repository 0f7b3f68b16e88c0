"""Data specs, idx reading, batches, held-out split, image folders."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from supernet.training.data import (DataError, Dataset, load_dataset, parse_data_spec, read_idx)


def write_idx(path, arr: np.ndarray, gz: bool) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_fmnist(d, n_train=40, n_test=12, gz=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(d / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 255, (n_train, 28, 28)), gz)
    write_idx(d / f"train-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n_train), gz)
    write_idx(d / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 255, (n_test, 28, 28)), gz)
    write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n_test), gz)


def test_parse_specs():
    assert parse_data_spec("fashion-mnist").path is None
    assert parse_data_spec("fashion-mnist:/x/y").path == "/x/y"
    assert parse_data_spec("imagefolder:/d").kind == "imagefolder"
    assert parse_data_spec("synthetic").kind == "synthetic"
    for bad in ("mnist", "imagefolder", "synthetic:/x", ""):
        with pytest.raises(DataError):
            parse_data_spec(bad)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_files_gzipped_or_plain(tmp_path, gz):
    fake_fmnist(tmp_path, gz=gz)
    ds = load_dataset(f"fashion-mnist:{tmp_path}", holdout=10)
    assert (len(ds.train), len(ds.holdout), len(ds.test)) == (30, 10, 12)
    x, y = ds.test.batch(np.arange(5), 40, train=False)
    assert x.shape == (5, 3, 40, 40) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # gray replicated
    assert y.dtype == torch.int64 and y.shape == (5,)


def test_missing_and_malformed_fashion_mnist(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="apt-get install"):
        load_dataset(f"fashion-mnist:{tmp_path}")  # empty directory
    fake_fmnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="damaged gzip"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    p = tmp_path / "bad"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_holdout_is_fixed_and_disjoint(synthetic):
    again = load_dataset("synthetic")
    assert np.array_equal(synthetic.holdout_indices, again.holdout_indices)
    assert not set(synthetic.holdout_indices) & set(synthetic.train_indices)
    assert len(synthetic.holdout_indices) + len(synthetic.train_indices) == len(synthetic.train_all)


def test_augmentation_uses_the_given_generator(synthetic):
    idx = np.arange(16)
    a, _ = synthetic.train.batch(idx, 32, train=True, rng=np.random.default_rng(1), crop_padding=2,
                                 flip=True)
    b, _ = synthetic.train.batch(idx, 32, train=True, rng=np.random.default_rng(1), crop_padding=2,
                                 flip=True)
    c, _ = synthetic.train.batch(idx, 32, train=True, rng=np.random.default_rng(2), crop_padding=2,
                                 flip=True)
    e, _ = synthetic.train.batch(idx, 32, train=False)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, e)


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / c / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}", holdout=4)
    assert ds.num_classes == 2 and len(ds.test) == 6 and len(ds.train) == 20
    x, y = ds.train.batch(np.arange(6), 32, train=True, rng=np.random.default_rng(0), flip=True)
    assert x.shape == (6, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    x, _ = ds.test.batch(np.arange(6), 40, train=False)
    assert x.shape == (6, 3, 40, 40)
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "bird")
    with pytest.raises(DataError, match="class folders differ"):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_holdout_must_fit():
    from supernet.training.data import ArraySource

    src = ArraySource(np.zeros((4, 8, 8), np.uint8), np.zeros(4), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(DataError, match="held-out"):
        Dataset("x", 10, src, src, 4)
