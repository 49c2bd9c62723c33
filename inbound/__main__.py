"""``python -m inbound``: the same command as the ``inbound`` script."""

import sys

from .ops.cli import main

sys.exit(main())
