"""Built-in task plugins, one sub-package per domain (installed as ``dnas_tasks``)."""
