"""Image classification datasets, as uint8 arrays with deterministic seeded splits.

Sources:
- ``digits``: scikit-learn's 1,797 8x8 digits (ships with scikit-learn; the default everywhere);
- ``fashion-mnist``: the idx files (gzipped or not), found under /usr/share/datasets/fashion-mnist
  or ``data_dir``; its official 10,000-image test set is the test split;
- ``npz``: a .npz file (``data_dir``) with ``x`` uint8 N x H x W or N x H x W x C and integer ``y``;
- ``imagefolder``: ``data_dir`` with one sub-folder per class of PNG/JPEG images.

Images are kept as uint8 N x C x H x W; `to_float` maps them to [0, 1] for models.
:func:`stratified_subset` cuts a seeded, class-balanced subset (small-data experiments), and
:func:`augment_images` is the training-time augmentation every recipe uses (random shifts,
mirror flips where the data allows them, mixup / cutmix).
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coinfer.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import torch

DATASETS = ("digits", "fashion-mnist", "npz", "imagefolder")
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_CLASSES = 100_000
"""Labels are class indices; anything larger is a damaged file, not a dataset."""
MIRROR_SAFE: dict[str, bool] = {"digits": False, "fashion-mnist": True}
"""Whether a left-right mirror keeps an image's class, for the datasets we know. A mirrored 2, 3,
4, 5, 7 or 9 is no digit (and a mirrored 6 or 9 is no closer to the other): digits, no. A mirrored
shirt, bag or sneaker is still one (a left shoe mirrored is a right shoe; the classes do not
depend on which way it points): Fashion-MNIST, yes. A user's npz or imagefolder data is unknown,
so flips stay off unless asked for."""


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


def mirror_safe(dataset: str) -> bool:
    """Whether random left-right flips are label-preserving for ``dataset`` (see :data:`MIRROR_SAFE`)."""
    return MIRROR_SAFE.get(dataset, False)


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


# Subsets -----------------------------------------------------------------------------------------


def stratified_subset(splits: DatasetSplits, images: int, seed: int = 0, val_fraction: float = 0.1) -> DatasetSplits:
    """``images`` labelled training images drawn from ``splits.train`` and ``splits.val`` together,
    class-balanced and seeded, cut again into train and validation (``val_fraction`` of each class);
    the test split is kept whole. The name says the size: ``"fashion-mnist-2000"``.
    """
    pool = ImageDataset(np.concatenate([splits.train.x, splits.val.x]), np.concatenate([splits.train.y, splits.val.y]))
    if not splits.num_classes * 2 <= images <= len(pool):
        raise InvalidInput(
            f"a subset of {images} images: needs between {splits.num_classes * 2} (two per class) and {len(pool)}"
        )
    keep, _ = _stratified_cut(pool.y, images / len(pool), seed)
    chosen = pool.subset(keep)
    val_idx, train_idx = _stratified_cut(chosen.y, val_fraction, seed + 1)
    return DatasetSplits(
        name=f"{splits.name}-{images}",
        train=chosen.subset(train_idx),
        val=chosen.subset(val_idx),
        test=splits.test,
        num_classes=splits.num_classes,
        class_names=splits.class_names,
    )


# Augmentation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixedImages:
    """A batch after augmentation: image i carries ``lam`` of its own label and ``1 - lam`` of its
    partner's (mixup / cutmix); without mixing, ``partner`` is None and ``lam`` 1."""

    x: "torch.Tensor"
    """The augmented images, on the device they came from."""
    partner: "torch.Tensor | None"
    """Index in the batch of the image each one was mixed with."""
    lam: float
    """Share of each image's own label."""

    def mix(self, loss_of_labels, y):
        """``lam * loss(y) + (1 - lam) * loss(y[partner])``: a label loss over the mixed targets."""
        if self.partner is None:
            return loss_of_labels(y)
        return self.lam * loss_of_labels(y) + (1 - self.lam) * loss_of_labels(y[self.partner])


def random_shift(x, max_shift: int, generator):
    """Shift every image by a random offset in [-max_shift, max_shift], padding with zeros.

    The offsets are drawn from ``generator``, which lives where ``x`` is (CPU or GPU).
    """
    import torch
    import torch.nn.functional as F

    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    device = x.device
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator, device=device)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(H, device=device)[None, :])[:, None, :, None].expand(B, C, H, W + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W, device=device)[None, :])[:, None, None, :].expand(B, C, H, W)
    return out.gather(3, cols)


def augment_images(
    x,
    generator,
    rng: np.random.Generator,
    max_shift: int = 0,
    hflip: bool = False,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> MixedImages:
    """Random shifts (up to ``max_shift`` px, zero padding), left-right flips of half the images,
    then mixup or cutmix of every image with its partner in the reversed batch (DeiT's pairing).

    With both mixing alphas set, each batch takes one of the two at random (DeiT: switch
    probability 0.5). Tensor draws use ``generator`` (on ``x``'s device); the few scalars (mixing
    weight, cut box) come from the host ``rng``, so nothing waits for the device.
    """
    import torch

    x = random_shift(x, max_shift, generator)
    if hflip:
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    alphas = [(kind, a) for kind, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not alphas or x.shape[0] < 2:
        return MixedImages(x, None, 1.0)
    kind, alpha = alphas[int(rng.integers(len(alphas)))]
    lam = float(rng.beta(alpha, alpha))
    partner = torch.arange(x.shape[0] - 1, -1, -1, device=x.device)
    if kind == "mixup":
        return MixedImages(lam * x + (1 - lam) * x[partner], partner, lam)
    H, W = x.shape[-2:]
    cut_h, cut_w = int(H * (1 - lam) ** 0.5), int(W * (1 - lam) ** 0.5)
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    top, bottom = max(0, cy - cut_h // 2), min(H, cy + cut_h - cut_h // 2)
    left, right = max(0, cx - cut_w // 2), min(W, cx + cut_w - cut_w // 2)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    # The label weight is the share of the image that is really its own after clipping the box.
    return MixedImages(mixed, partner, 1.0 - (bottom - top) * (right - left) / (H * W))
