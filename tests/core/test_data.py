import gzip
import struct

import numpy as np
import pytest

from coinfer.core.data import load_dataset, to_float
from coinfer.core.errors import InvalidInput, NotFound


def test_digits_splits_are_disjoint_stratified_and_deterministic():
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert a.image_shape == (1, 8, 8) and a.num_classes == 10
    assert a.train.x.dtype == np.uint8 and a.train.y.dtype == np.int64
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    np.testing.assert_array_equal(a.test.y, b.test.y)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    # every class in every split, in proportion
    for split in (a.train, a.val, a.test):
        assert set(np.unique(split.y)) == set(range(10))
    assert abs(len(a.test) / 1797 - 0.2) < 0.01
    # the three splits share no image
    rows = lambda d: {r.tobytes() for r in d.x}
    all_rows = rows(a.train) | rows(a.val) | rows(a.test)
    assert len(all_rows) >= 1797 - 20  # duplicates exist in digits itself; splits are index-disjoint
    x, y = a.train.tensors()
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0 and x.shape[1:] == (1, 8, 8)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 5, 6, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset("npz", data_dir=tmp_path / "d.npz")
    assert d.image_shape == (3, 5, 6) and d.num_classes == 3
    assert len(d.train) + len(d.val) + len(d.test) == 60
    # HWC -> CHW keeps pixel values
    idx = 0
    img = d.test.x[idx]
    matches = [i for i in range(60) if np.array_equal(np.transpose(x[i], (2, 0, 1)), img)]
    assert matches and y[matches[0]] == d.test.y[idx]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(InvalidInput, match="3 images but 2 labels"):
        load_dataset("npz", data_dir=tmp_path / "bad.npz")
    np.savez(tmp_path / "float.npz", x=np.zeros((3, 4, 4), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(InvalidInput, match="uint8"):
        load_dataset("npz", data_dir=tmp_path / "float.npz")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3, np.int64))
    with pytest.raises(InvalidInput, match="missing array"):
        load_dataset("npz", data_dir=tmp_path / "nox.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InvalidInput, match="junk.npz"):
        load_dataset("npz", data_dir=tmp_path / "junk.npz")
    obj = np.array([{"a": 1}] * 3, dtype=object)
    np.savez(tmp_path / "pickled.npz", x=obj, y=np.zeros(3, np.int64))
    with pytest.raises(InvalidInput, match="pickled.npz"):
        load_dataset("npz", data_dir=tmp_path / "pickled.npz")


def test_imagefolder_source(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, size=(7, 9), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset("imagefolder", data_dir=tmp_path)
    assert d.class_names == ("cat", "dog") and d.image_shape == (1, 7, 9)
    assert len(d.train) + len(d.val) + len(d.test) == 20
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InvalidInput, match="broken.png"):
        load_dataset("imagefolder", data_dir=tmp_path)


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_reader(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (100, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(100) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    d = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert d.image_shape == (1, 28, 28) and len(d.test) == 20 and len(d.train) + len(d.val) == 100
    # truncated file names the file
    raw = gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(raw[:-1])
    with pytest.raises(InvalidInput, match="t10k-labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_unknown_and_missing():
    with pytest.raises(NotFound, match="unknown dataset 'cifar'.*digits"):
        load_dataset("cifar")
    with pytest.raises(NotFound, match="does not exist"):
        load_dataset("imagefolder", data_dir="/no/such/folder")
    with pytest.raises(InvalidInput, match="--data-dir"):
        load_dataset("npz")
    with pytest.raises(NotFound, match="Fashion-MNIST"):
        load_dataset("fashion-mnist", data_dir="/no/such/folder")


def test_to_float_range():
    x = np.array([[[[0, 255]]]], np.uint8)
    t = to_float(x)
    assert t.dtype.is_floating_point and float(t.max()) == 1.0 and float(t.min()) == 0.0
