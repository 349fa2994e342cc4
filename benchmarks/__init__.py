"""Benchmarks: scripts that print numbers (never tests). They import the library; the library never imports them.

Run them with `python scripts/benchmark.py NAME [options]` from the repository root; the names: decode, caption,
folder, data, train, epoch, serve, recaption.
"""
