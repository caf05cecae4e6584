"""Audio and signal classification tasks: FSDD spoken digits, a user's folder of
labelled WAV files, MNIST-1D. Registered by the ``audio`` plugin.

The plugin also implements ``dnas_run_start``: a run of one of these tasks gets a
``features.json`` in its run directory that says how raw audio becomes the model's
input (sample rate, clip length, STFT and mel settings, class names).
"""

from dnas_core import hookimpl

from .features import log_mel, mel_filterbank
from .readers import SafeUnpickler, read_mnist1d, read_wav
from .tasks import FSDDTask, MNIST1DTask, SequenceFeatureTask, WavFolderTask

__all__ = ["FSDDTask", "MNIST1DTask", "SafeUnpickler", "SequenceFeatureTask", "WavFolderTask", "log_mel",
           "mel_filterbank", "read_mnist1d", "read_wav"]


@hookimpl
def dnas_register_tasks():
    return [FSDDTask, WavFolderTask, MNIST1DTask]


@hookimpl
def dnas_run_start(run):
    if isinstance(run.task, SequenceFeatureTask):
        for name, content in run.task.run_files().items():
            run.run_dir.write_json(name, content)
