"""Thin wrapper: see captioner/finetune_experiment.py."""

import sys

from captioner.finetune_experiment import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
