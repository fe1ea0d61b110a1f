"""``python -m hibt`` is the ``hibt`` command."""

from hibt.cli import app

app()
