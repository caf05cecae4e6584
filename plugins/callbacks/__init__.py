"""Callbacks (loggers) that observe runs through the lifecycle hooks."""
