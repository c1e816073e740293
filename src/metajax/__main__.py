"""``python -m metajax``: the same as the ``metajax`` command."""

import sys

from metajax.cli import main

sys.exit(main())
