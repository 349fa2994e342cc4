"""Thin wrapper: `python scripts/demo.py` == `captioner demo` (train on shapes, evaluate 500 test scenes)."""

import sys

from captioner.cli.demo import demo

if __name__ == "__main__":
    sys.exit(demo(sys.argv[1:]))
