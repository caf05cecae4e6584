"""Readers for image data in its original distribution formats.

* IDX (MNIST / Fashion-MNIST): big-endian header ``0x00 0x00 <type> <ndim>``, then
  ``ndim`` uint32 sizes, then the data; optionally gzip-compressed.
* Image folders: ``root/<class_name>/*.png|jpg|...``, classes sorted by name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from dnas_core import DataError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw). Errors name the file and what is wrong."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected an IDX file (e.g. train-images-idx3-ubyte.gz)") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{p}: cannot read as gzip-compressed IDX: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{p}: truncated IDX header ({ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(f"{p}: IDX header says shape {shape} ({expected} bytes) but {len(body)} data bytes follow")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def read_image_folder(root: str | Path, size: tuple[int, int] | None, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) float32 in [0, 1], labels (N,), class names."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected root/<class_name>/<image files>")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folders; expected at least 2 (root/<class_name>/*.png)")
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for label, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{root / cls}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert(mode)
                    if size is None:
                        size = (im.height, im.width)
                    if (im.height, im.width) != tuple(size):
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{f}: cannot decode image: {exc}") from None
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
