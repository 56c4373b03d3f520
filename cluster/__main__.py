"""``python -m cluster up [--detach] | down | status`` (see :mod:`cluster.cli`)."""

import sys

from .cli import main

sys.exit(main())
