"""Thin wrapper: `python scripts/benchmark.py decode` == `captioner bench decode`."""

import sys

from captioner.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
