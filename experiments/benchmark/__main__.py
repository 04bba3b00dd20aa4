"""``python -m experiments.benchmark``: see :func:`experiments.benchmark.cli.main`."""

import sys

from experiments.benchmark.cli import main

sys.exit(main())
