"""Batch jobs (``/v1/batch/jobs``): stored requests run in the background, one line at a time."""
