"""The `captioner` command line; `main` is the console script."""

from captioner.cli.main import main

__all__ = ["main"]
