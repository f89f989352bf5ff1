"""``python -m sdeflow [command] [options]`` is the ``sdeflow`` command (see :mod:`sdeflow.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
