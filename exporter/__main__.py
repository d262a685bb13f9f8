"""`python -m exporter` runs the same CLI as the `cf-images-export` console script."""

import sys

from exporter.cli import main

sys.exit(main())
