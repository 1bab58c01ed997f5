"""`python -m app.cli`: the same as the `sprout` console script."""

from app.cli import app

app()
