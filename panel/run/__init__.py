"""Processes: `helios up`, the worker, the panel under gunicorn, a local Redis."""
