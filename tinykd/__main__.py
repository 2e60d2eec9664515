"""`python -m tinykd stage=<name> [key=value ...]`: compose the config, run the stage."""

import sys

from tinykd.cli import main

if __name__ == "__main__":
    sys.exit(main())
