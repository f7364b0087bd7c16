"""``python -m levant.cli``: the same as the ``levant`` command."""

from levant.cli import app

app()
