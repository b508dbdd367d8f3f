"""Image classification datasets, as uint8 arrays with deterministic seeded splits.

Sources:
- ``digits``: scikit-learn's 1,797 8x8 digits (ships with scikit-learn; the default everywhere);
- ``fashion-mnist``: the idx files (gzipped or not), found under /usr/share/datasets/fashion-mnist
  or ``data_dir``; its official 10,000-image test set is the test split;
- ``npz``: a .npz file (``data_dir``) with ``x`` uint8 N x H x W or N x H x W x C and integer ``y``;
- ``imagefolder``: ``data_dir`` with one sub-folder per class of PNG/JPEG images.

Images are kept as uint8 N x C x H x W; `to_float` maps them to [0, 1] for models.
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coinfer.core.errors import InvalidInput, NotFound

DATASETS = ("digits", "fashion-mnist", "npz", "imagefolder")
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_CLASSES = 100_000
"""Labels are class indices; anything larger is a damaged file, not a dataset."""


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels of one split."""

    x: np.ndarray
    """uint8 images, N x C x H x W."""
    y: np.ndarray
    """int64 labels, N."""

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "ImageDataset":
        return ImageDataset(self.x[index], self.y[index])

    def tensors(self):
        """(float images in [0, 1], int64 labels) as torch tensors."""
        import torch

        return to_float(self.x), torch.from_numpy(self.y)


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset cut into train, validation and test splits."""

    name: str
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


def to_float(x: np.ndarray):
    """uint8 images to a float32 torch tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Load a dataset by name and split it deterministically for `seed`.

    `test_fraction` is ignored where the source has an official test set (Fashion-MNIST).
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise InvalidInput(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in (0, 1) and sum below 1")
    if name == "digits":
        x, y, classes = _load_digits()
    elif name == "fashion-mnist":
        return _load_fashion_mnist(data_dir, seed, val_fraction)
    elif name == "npz":
        x, y, classes = _load_npz(_require_dir_arg(name, data_dir))
    elif name == "imagefolder":
        x, y, classes = _load_imagefolder(_require_dir_arg(name, data_dir))
    else:
        raise NotFound(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    test_idx, rest_idx = _stratified_cut(y, test_fraction, seed)
    val_idx, train_idx = _stratified_cut(y[rest_idx], val_fraction / (1 - test_fraction), seed + 1)
    full = ImageDataset(x, y)
    return DatasetSplits(
        name=name,
        train=full.subset(rest_idx[train_idx]),
        val=full.subset(rest_idx[val_idx]),
        test=full.subset(test_idx),
        num_classes=len(classes),
        class_names=classes,
    )


def _require_dir_arg(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise InvalidInput(f"dataset {name!r} needs a data path (--data-dir)")
    path = Path(data_dir)
    if not path.exists():
        raise NotFound(f"dataset {name!r}: {path} does not exist")
    return path


def _stratified_cut(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (cut, rest): `fraction` of every class goes to `cut`, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    cut, rest = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_cut = int(round(fraction * len(idx)))
        if len(idx) > 1:
            n_cut = min(max(n_cut, 1), len(idx) - 1)
        cut.append(idx[:n_cut])
        rest.append(idx[n_cut:])
    return np.sort(np.concatenate(cut)), np.sort(np.concatenate(rest))


def _check_labels(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if len(x) != len(y):
        raise InvalidInput(f"{source}: {len(x)} images but {len(y)} labels")
    if len(y) == 0:
        raise InvalidInput(f"{source}: no images")
    if not np.issubdtype(y.dtype, np.integer):
        raise InvalidInput(f"{source}: labels must be integers, got {y.dtype}")
    if y.min() < 0:
        raise InvalidInput(f"{source}: labels must be >= 0, found {int(y.min())}")
    if y.max() >= MAX_CLASSES:
        raise InvalidInput(f"{source}: label {int(y.max())} is above the limit of {MAX_CLASSES} classes")
    num_classes = int(y.max()) + 1
    return x, y.astype(np.int64), tuple(str(i) for i in range(num_classes))


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretch to the full uint8 range like every other source.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    return x, bunch.target.astype(np.int64), tuple(str(i) for i in range(10))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"{path}: cannot read idx file ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InvalidInput(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidInput(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise InvalidInput(f"{path}: {len(data) - header} bytes of data, shape {list(dims)} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise NotFound(f"Fashion-MNIST file {stem}[.gz] is missing in {folder}")


def _load_fashion_mnist(data_dir: str | Path | None, seed: int, val_fraction: float) -> DatasetSplits:
    folders = [Path(data_dir)] if data_dir is not None else list(FASHION_MNIST_DIRS)
    folder = next((f for f in folders if f.is_dir()), None)
    if folder is None:
        raise NotFound(
            f"Fashion-MNIST not found in {', '.join(map(str, folders))}; on Debian: "
            "apt-get install dataset-fashion-mnist, or pass --data-dir with the idx files"
        )
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
        x, y, _ = _check_labels(images, labels.astype(np.int64), str(folder / prefix))
        arrays[split] = ImageDataset(x[:, None, :, :].copy(), y)
    val_idx, train_idx = _stratified_cut(arrays["train"].y, val_fraction, seed)
    return DatasetSplits(
        name="fashion-mnist",
        train=arrays["train"].subset(train_idx),
        val=arrays["train"].subset(val_idx),
        test=arrays["test"],
        num_classes=10,
        class_names=FASHION_MNIST_CLASSES,
    )


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise InvalidInput(f"{path}: missing array(s) {sorted(missing)}; expected 'x' and 'y'")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InvalidInput(f"{path}: cannot read npz file ({exc})") from exc
    if x.dtype != np.uint8:
        raise InvalidInput(f"{path}: 'x' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        x = np.transpose(x, (0, 3, 1, 2))
    else:
        raise InvalidInput(f"{path}: 'x' must be N x H x W or N x H x W x C, got shape {list(x.shape)}")
    if y.ndim != 1:
        raise InvalidInput(f"{path}: 'y' must be one label per image, got shape {list(y.shape)}")
    return _check_labels(np.ascontiguousarray(x), y, str(path))


def _load_imagefolder(root: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise InvalidInput(f"{root}: imagefolder expects a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InvalidInput(f"{root}: no class sub-folders")
    images, labels, shape = [], [], None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    # Grey stays one channel; everything else (palette, RGBA, CMYK) becomes RGB.
                    arr = np.asarray(img.convert("L" if img.mode in ("1", "L", "I", "I;16") else "RGB"))
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
                raise InvalidInput(f"{file}: unreadable image ({exc})") from exc
            arr = arr[None, :, :] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise InvalidInput(f"{file}: image shape {list(arr.shape)} differs from the first image's {list(shape)}")
            images.append(arr)
            labels.append(label)
    if not images:
        raise InvalidInput(f"{root}: no PNG or JPEG images in the class folders")
    x, y, _ = _check_labels(np.stack(images).astype(np.uint8), np.array(labels, dtype=np.int64), str(root))
    return x, y, tuple(classes)
