"""Small tasks on the committed text / audio slices, shared by the seq tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
TEXT = DATA / "text"
AUDIO = DATA / "audio"
_WAV_ROOT: list[Path] = []


def registries():
    from dnas_core import get_plugin_manager

    return get_plugin_manager().registries


_SHARED: dict[str, object] = {}


def task(name: str, fresh: bool = True, **cfg):
    """A task; with ``fresh=False`` one instance per config is shared by the tests of
    the session (its data are read and split once)."""
    if fresh:
        return registries().tasks.create(name, cfg)
    import json

    key = json.dumps([name, cfg], sort_keys=True, default=str)
    if key not in _SHARED:
        _SHARED[key] = registries().tasks.create(name, cfg)
    return _SHARED[key]


def sst2(fresh: bool = False, **cfg):
    return task("sst2", fresh, path=str(TEXT / "sst2"), val_fraction=0.25, **cfg)


def sms(fresh: bool = False, **cfg):
    return task("sms_spam", fresh, path=str(TEXT / "sms-spam" / "SMSSpamCollection"), **cfg)


def text_file(fresh: bool = False, **cfg):
    return task("text_file", fresh, path=str(TEXT / "reviews.csv"), **cfg)


def fsdd(fresh: bool = False, **cfg):
    return task("fsdd", fresh, path=str(AUDIO / "fsdd"), **{"val_fraction": 0.25, **cfg})


def mnist1d(fresh: bool = False, **cfg):
    return task("mnist1d", fresh, path=str(AUDIO / "mnist1d_slice.pkl"), **cfg)


def wav_folder_root() -> Path:
    """root/<digit>/*.wav built once per session from the FSDD slice (3 classes)."""
    if not _WAV_ROOT:
        root = Path(tempfile.mkdtemp(prefix="dnas-wavs-"))
        for f in sorted((AUDIO / "fsdd" / "recordings").glob("[012]_*.wav")):
            (root / f"digit{f.name[0]}").mkdir(exist_ok=True)
            shutil.copy(f, root / f"digit{f.name[0]}" / f.name)
        _WAV_ROOT.append(root)
    return _WAV_ROOT[0]


def wav_folder(fresh: bool = False, **cfg):
    return task("wav_folder", fresh, path=str(wav_folder_root()), duration=0.6, **cfg)


def one_thread():
    """Body of the seq tests' autouse fixture: one torch thread for the module.

    On these shared 2-core machines, under load, two OpenMP threads made a supernet
    step 30-100x slower than one (spin-waiting on a busy core); one thread is also
    what small sequence models need."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before
