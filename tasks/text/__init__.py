"""Text classification tasks: SST-2, SMS Spam Collection, a user's CSV/TSV.
Registered by the ``text`` plugin.

The plugin also implements ``dnas_run_start``: a run of one of these tasks gets a
``tokenizer.json`` (vocabulary, settings and class names) in its run directory, so
that the exported model and the tokenizer that feeds it stay together.
"""

from dnas_core import hookimpl

from .tasks import SMSSpamTask, SST2Task, TextFileTask, TextTask
from .tokenizer import Tokenizer

__all__ = ["SMSSpamTask", "SST2Task", "TextFileTask", "TextTask", "Tokenizer"]


@hookimpl
def dnas_register_tasks():
    return [SST2Task, SMSSpamTask, TextFileTask]


@hookimpl
def dnas_run_start(run):
    if isinstance(run.task, TextTask):
        for name, content in run.task.run_files().items():
            run.run_dir.write_json(name, content)
