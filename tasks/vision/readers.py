"""Readers for image data in its original distribution formats.

* IDX (MNIST / Fashion-MNIST): big-endian header ``0x00 0x00 <type> <ndim>``, then
  ``ndim`` uint32 sizes, then the data; optionally gzip-compressed.
* Image folders: ``root/<class_name>/*.png|jpg|...``, classes sorted by name.
* CIFAR-10 / CIFAR-100, python version: pickled batches (read with the safe
  unpickler), from the unpacked folder or the official ``.tar.gz`` archive.
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


# -- CIFAR-10 / CIFAR-100 ("CIFAR-10 python version") -------------------------------------

#: The batch files of each data set inside its folder (as the official archives unpack).
CIFAR_LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"},
    "cifar100": {"folder": "cifar-100-python", "archive": "cifar-100-python.tar.gz",
                 "train": ["train"], "test": ["test"], "meta": "meta"},
}


def _cifar_expected(which: str) -> str:
    lay = CIFAR_LAYOUT[which]
    files = ", ".join(lay["train"][:1] + (["..."] if len(lay["train"]) > 1 else []) + lay["test"] + [lay["meta"]])
    return (f"the python version of {which.upper().replace('CIFAR', 'CIFAR-')}: the folder {lay['folder']} "
            f"({files}), a folder holding it, or the archive {lay['archive']}")


def _cifar_sources(which: str, path: Path) -> dict[str, bytes]:
    """The raw bytes of every batch file of ``which``, from the unpacked folder (or a
    folder holding it) or straight from the official ``.tar.gz`` archive."""
    import tarfile

    lay = CIFAR_LAYOUT[which]
    names = [*lay["train"], *lay["test"], lay["meta"]]
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers()
                           if m.isfile() and Path(m.name).parent.name == lay["folder"]}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{which}: {path} lacks {lay['folder']}/{missing[0]}; expected {_cifar_expected(which)}")
                return {n: tar.extractfile(members[n]).read() for n in names}  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{which}: {path} is not a readable .tar.gz archive ({exc}); "
                            f"expected {_cifar_expected(which)}") from None
    folder = path / lay["folder"] if (path / lay["folder"]).is_dir() else path
    out = {}
    for n in names:
        f = folder / n
        if not f.is_file():
            raise DataError(f"{which}: {f} not found; expected {_cifar_expected(which)}")
        out[n] = f.read_bytes()
    return out


def _unpickle_cifar(which: str, raw: bytes, source: str) -> dict[str, object]:
    """One batch file: a pickled dict (Python 2 ``str`` keys in the official files, so
    read with ``latin1``; ``bytes`` keys are accepted too), loaded with the safe
    unpickler (numpy arrays and plain containers only)."""
    import io

    from dnas_tasks._common import SafeUnpickler

    try:
        obj = SafeUnpickler(io.BytesIO(raw), Path(source), encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{which}: {source} is not a valid pickle ({type(exc).__name__}: {exc}); "
                        f"expected {_cifar_expected(which)}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{which}: {source} holds a {type(obj).__name__}, not the dict of a CIFAR batch")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _names(values: object) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in (values or [])]  # type: ignore[union-attr]


def read_cifar(which: str, path: str | Path, label: str = "fine") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray, list[str]]:
    """CIFAR-10 (``which="cifar10"``) or CIFAR-100 (``"cifar100"``, ``label`` ``"fine"``
    (100 classes) or ``"coarse"`` (20 superclasses)) from the original python-pickle
    batches: ``(train_x (N, 3, 32, 32) uint8, train_y int64, test_x, test_y, class
    names)``. Each batch holds ``data``, a (N, 3072) uint8 array of the red, green and
    blue 32x32 planes row by row, and its labels."""
    raw = _cifar_sources(which, Path(path))
    lay = CIFAR_LAYOUT[which]
    label_key = "labels" if which == "cifar10" else f"{label}_labels"
    meta = _unpickle_cifar(which, raw[lay["meta"]], f"{path}/{lay['meta']}")
    names_key = "label_names" if which == "cifar10" else f"{label}_label_names"
    classes = _names(meta.get(names_key))
    if not classes:
        raise DataError(f"{which}: {path}/{lay['meta']} has no {names_key!r}; expected {_cifar_expected(which)}")

    def split(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in files:
            d = _unpickle_cifar(which, raw[n], f"{path}/{n}")
            if "data" not in d or label_key not in d:
                raise DataError(f"{which}: {path}/{n} lacks 'data' or {label_key!r} (has {sorted(d)}); "
                                f"expected {_cifar_expected(which)}")
            x = np.asarray(d["data"])
            y = np.asarray(d[label_key], dtype=np.int64)
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
                raise DataError(f"{which}: {path}/{n}: data {x.dtype} {x.shape} with {len(y)} labels; expected uint8 "
                                "(N, 3072) (three 32x32 planes) and N labels")
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise DataError(f"{which}: {path}/{n}: labels outside 0..{len(classes) - 1}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = split(lay["train"])
    test_x, test_y = split(lay["test"])
    return train_x, train_y, test_x, test_y, classes
