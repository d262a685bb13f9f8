"""`python -m exporter` runs the same CLI as the `cf-images-export` console script."""

from exporter.cli.commands import run

run()
