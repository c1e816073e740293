"""``python -m metajax``: the same as the ``metajax`` command."""

import sys

from metajax.cli.dispatch import main

sys.exit(main())
