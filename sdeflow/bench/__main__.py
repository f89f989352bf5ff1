"""``python -m sdeflow.bench [options]`` is ``sdeflow bench [options]``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
