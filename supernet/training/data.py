"""Datasets for training and evaluating supernets: Fashion-MNIST, an image folder, synthetic.

A dataset is two sources of labelled images (``train`` and ``test``) plus a fixed held-out
part of the training set (``holdout``) used for BN re-calibration, validation and accuracy
predictor data. Images are kept small (uint8 arrays or file paths) and turned into float
batches at the resolution the caller asks for, one resolution per batch; every random choice
(crop offsets, flips) comes from the ``numpy.random.Generator`` the caller passes.

Data specs: ``fashion-mnist[:DIR]``, ``imagefolder:PATH``, ``synthetic``.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OfaDeployError

__all__ = [
    "DataError",
    "DataSpec",
    "Dataset",
    "ArraySource",
    "FolderSource",
    "Subset",
    "load_dataset",
    "parse_data_spec",
    "read_idx",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_HINT",
    "HOLDOUT_SEED",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HINT = ("install it with `apt-get install -y dataset-fashion-mnist` (files land in "
                      f"{FASHION_MNIST_DIR}) or pass fashion-mnist:DIR with the four idx files")
# The held-out split must be the same for the trainer, `eval --split val` and predictor data, so
# it is drawn from a constant seed, never from the training seed.
HOLDOUT_SEED = 20190
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


class DataError(OfaDeployError, ValueError):
    """A dataset that is missing, malformed or does not fit; the message says how to fix it."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: the kind of dataset and its location, if any."""

    kind: str  # fashion-mnist | imagefolder | synthetic
    path: str | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_data_spec(text: str) -> DataSpec:
    """Parse ``fashion-mnist[:DIR]``, ``imagefolder:PATH`` or ``synthetic``."""
    t = (text or "").strip()
    kind, _, path = t.partition(":")
    kind = kind.lower()
    path = path or None
    if kind in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return DataSpec("fashion-mnist", path)
    if kind == "imagefolder":
        if not path:
            raise DataError("imagefolder needs a path: imagefolder:PATH (with train/ and val/ "
                            "subfolders of class folders)")
        return DataSpec("imagefolder", path)
    if kind == "synthetic":
        if path:
            raise DataError("synthetic takes no path")
        return DataSpec("synthetic")
    raise DataError(f"unknown data spec {text!r}; use fashion-mnist[:DIR], imagefolder:PATH or "
                    "synthetic")


# ----------------------------------------------------------------------------------- sources
class Source:
    """Labelled images; ``batch`` turns indices into a normalised NCHW float tensor."""

    labels: np.ndarray
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: np.ndarray, resolution: int, *, train: bool,
              rng: np.random.Generator | None = None, crop_padding: int = 0,
              flip: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images ``indices`` as a normalised float ``(N, 3, resolution, resolution)`` batch and
        their labels; ``train`` augments (crop padding, flips) with draws from ``rng``."""
        raise NotImplementedError

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        if x.size(1) == 1:  # gray: normalise once, then replicate to the 3 input channels
            x = (x - mean[:, :1]) / std[:, :1]
            return x.expand(-1, 3, -1, -1).contiguous()
        return (x - mean) / std


class ArraySource(Source):
    """In-memory uint8 images, ``(N, H, W)`` gray or ``(N, H, W, 3)`` colour."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std):
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"images must be uint8 (N,H,W[,3]), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean, self.std = tuple(mean), tuple(std)

    def batch(self, indices, resolution, *, train, rng=None, crop_padding=0, flip=False):
        """See :meth:`Source.batch`; images are resized bilinearly to ``resolution``."""
        idx = np.asarray(indices, dtype=np.int64)
        imgs = self.images[idx]
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if train and (crop_padding > 0 or flip):
            if rng is None:
                raise ValueError("training batches need an rng")
            imgs = _augment(imgs, rng, crop_padding, flip)
        x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=False)
        return self._normalise(x), torch.from_numpy(self.labels[idx])


def _augment(imgs: np.ndarray, rng: np.random.Generator, pad: int, flip: bool) -> np.ndarray:
    n, h, w, _ = imgs.shape
    if pad > 0:
        padded = np.pad(imgs, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        off = rng.integers(0, 2 * pad + 1, size=(n, 2))
        rows = off[:, :1] + np.arange(h)[None, :]
        cols = off[:, 1:] + np.arange(w)[None, :]
        imgs = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mask = rng.random(n) < 0.5
        imgs = imgs.copy()
        imgs[mask] = imgs[mask, :, ::-1]
    return imgs


class FolderSource(Source):
    """Image files read with Pillow per batch (``train``: random crop + flip; eval: centre crop)."""

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(self, paths: Sequence[str], labels: Sequence[int]):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean, self.std = self.IMAGENET_MEAN, self.IMAGENET_STD

    def batch(self, indices, resolution, *, train, rng=None, crop_padding=0, flip=False):
        """See :meth:`Source.batch`; training crops are random resized crops, so
        ``crop_padding`` does not apply."""
        Image = _pillow()
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), resolution, resolution, 3), dtype=np.uint8)
        for j, i in enumerate(idx.tolist()):
            try:
                with Image.open(self.paths[i]) as im:
                    im = im.convert("RGB")
                    if train:
                        im = _random_resized_crop(im, resolution, rng, Image)
                        if flip and rng.random() < 0.5:
                            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    else:
                        im = _center_crop(im, resolution, Image)
                    out[j] = np.asarray(im, dtype=np.uint8)
            except OSError as exc:
                raise DataError(f"cannot read image {self.paths[i]}: {exc}") from None
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
        return self._normalise(x), torch.from_numpy(self.labels[idx])


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("imagefolder data needs Pillow: pip install Pillow") from None
    return Image


def _random_resized_crop(im, size: int, rng: np.random.Generator, Image):
    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.25, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return _center_crop(im, size, Image)


def _center_crop(im, size: int, Image):
    w, h = im.size
    short = max(1, int(round(size / 0.875)))  # resize-then-crop ratio of the reference eval
    scale = short / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = im.size
    x0, y0 = (w - size) // 2, (h - size) // 2
    return im.crop((x0, y0, x0 + size, y0 + size))


class Subset(Source):
    """A view of some indices of another source."""

    def __init__(self, source: Source, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = source.labels[self.indices]
        self.mean, self.std = source.mean, source.std

    def batch(self, indices, resolution, **kw):
        """See :meth:`Source.batch`; ``indices`` count within this subset."""
        return self.source.batch(self.indices[np.asarray(indices, dtype=np.int64)], resolution,
                                 **kw)


# ----------------------------------------------------------------------------------- dataset
@dataclass
class Dataset:
    """Training images (minus a fixed held-out part), the held-out part and test images."""

    name: str
    num_classes: int
    train_all: Source
    test: Source
    holdout_size: int

    def __post_init__(self) -> None:
        n = len(self.train_all)
        if not 0 < self.holdout_size < n:
            raise DataError(f"held-out split of {self.holdout_size} images does not fit a "
                            f"training set of {n}")
        perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
        self.holdout_indices = np.sort(perm[: self.holdout_size])
        self.train_indices = np.sort(perm[self.holdout_size:])
        self.train = Subset(self.train_all, self.train_indices)
        self.holdout = Subset(self.train_all, self.holdout_indices)

    def split(self, name: str) -> Source:
        """``test``, ``val`` (the held-out part of the training set) or ``train``."""
        if name == "test":
            return self.test
        if name == "val":
            return self.holdout
        if name == "train":
            return self.train
        raise DataError(f"unknown split {name!r} (test, val or train)")


DEFAULT_HOLDOUT = {"fashion-mnist": 5000, "synthetic": 128}


def load_dataset(spec: "str | DataSpec", *, holdout: int | None = None) -> Dataset:
    """Open a dataset spec; any missing or malformed file gives a :class:`DataError`."""
    if not isinstance(spec, DataSpec):
        spec = parse_data_spec(spec)
    if spec.kind == "fashion-mnist":
        return _fashion_mnist(spec.path or FASHION_MNIST_DIR, holdout)
    if spec.kind == "imagefolder":
        return _image_folder(spec.path, holdout)
    return _synthetic(holdout)


# -- Fashion-MNIST --------------------------------------------------------------------------
FMNIST_MEAN, FMNIST_STD = (0.2860,) * 3, (0.3530,) * 3
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: "str | os.PathLike") -> np.ndarray:
    """Read an idx file (optionally gzipped) as a uint8 array."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{p} is a damaged gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{p} is not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p} is truncated (header)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - header != count:
        raise DataError(f"{p} is truncated or padded: {len(raw) - header} bytes of data for "
                        f"shape {tuple(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    raise DataError(f"Fashion-MNIST file {stem}[.gz] not found in {directory}: "
                    f"{FASHION_MNIST_HINT}")


def _fashion_mnist(directory: str, holdout: int | None) -> Dataset:
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"Fashion-MNIST directory {d} does not exist: {FASHION_MNIST_HINT}")
    arrays = {k: read_idx(_find(d, v)) for k, v in _FMNIST_FILES.items()}
    for part in ("train", "test"):
        im, lb = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if im.ndim != 3 or lb.ndim != 1 or len(im) != len(lb):
            raise DataError(f"Fashion-MNIST {part} files in {d} do not match: images "
                            f"{im.shape}, labels {lb.shape}")
        if lb.size and int(lb.max()) > 9:
            raise DataError(f"Fashion-MNIST {part} labels in {d} go beyond 9")
    train = ArraySource(arrays["train_images"], arrays["train_labels"], FMNIST_MEAN, FMNIST_STD)
    test = ArraySource(arrays["test_images"], arrays["test_labels"], FMNIST_MEAN, FMNIST_STD)
    hold = DEFAULT_HOLDOUT["fashion-mnist"] if holdout is None else holdout
    return Dataset("fashion-mnist", 10, train, test, min(hold, len(train) // 2))


# -- image folder ---------------------------------------------------------------------------
def _scan(root: Path, classes: List[str] | None) -> Tuple[List[str], List[str], List[int]]:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected train/ and val/ "
                        "subfolders, one folder of images per class)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    elif found != classes:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise DataError(f"{root}: class folders differ from train/ (missing {missing[:5]}, "
                        f"extra {extra[:5]})")
    paths, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                paths.append(str(f))
                labels.append(ci)
    if len(classes) < 2:
        raise DataError(f"{root} needs at least two class folders, found {len(classes)}")
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, paths, labels


def _image_folder(path: str, holdout: int | None) -> Dataset:
    _pillow()
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes, tp, tl = _scan(root / "train", None)
    _, vp, vl = _scan(root / "val", classes)
    hold = min(10000, max(1, len(tp) // 10)) if holdout is None else holdout
    return Dataset(f"imagefolder:{root}", len(classes), FolderSource(tp, tl), FolderSource(vp, vl),
                   hold)


# -- synthetic ------------------------------------------------------------------------------
def _synthetic(holdout: int | None, num_classes: int = 10) -> Dataset:
    """Small learnable data for tests: a fixed colour pattern per class plus noise."""
    rng = np.random.default_rng(7)
    templates = rng.normal(0.0, 1.0, size=(num_classes, 4, 4, 3))
    templates = np.repeat(np.repeat(templates, 4, axis=1), 4, axis=2)  # 16x16 blocks

    def make(n: int) -> ArraySource:
        labels = rng.integers(0, num_classes, size=n)
        x = templates[labels] + rng.normal(0.0, 0.6, size=(n, 16, 16, 3))
        imgs = np.clip(128 + 48 * x, 0, 255).astype(np.uint8)
        return ArraySource(imgs, labels, (0.5,) * 3, (0.25,) * 3)

    train, test = make(640), make(256)
    hold = DEFAULT_HOLDOUT["synthetic"] if holdout is None else holdout
    return Dataset("synthetic", num_classes, train, test, hold)
