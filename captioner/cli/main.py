"""The `captioner` command: a plain table of subcommands (litgpt's `__main__.py`), each in its own module."""

from __future__ import annotations

import importlib
import pickle
import sys

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
# command -> (module of captioner.cli, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "caption": ("caption", "caption", "caption image files:  captioner caption MODEL_DIR IMAGE [IMAGE ...]"),
    "evaluate": ("evaluate", "evaluate", "caption a data set split and score it: captioner evaluate MODEL_DIR"),
    "demo": ("demo", "demo", "train on shapes, evaluate on 500 test scenes (what `make demo` runs)"),
    "shapes": ("data", "shapes", "write shapes scenes to disk as an imagefolder"),
    "shards": ("data", "shards", "write webdataset shards from an imagefolder, table, COCO or Karpathy data"),
    "prepare-coco": ("data", "prepare_coco", "check a COCO captions folder and print the config that reads it"),
}

USAGE = (
    """usage: captioner COMMAND [options]

Training (LightningCLI; `captioner fit --help` for every option):
  fit         train from a YAML config: captioner fit --config configs/shapes.yaml
  validate    run validation on a checkpoint
  test        run the test loop
  predict     caption the data's predict split

Using a trained model package, and data:
"""
    + "\n".join(f"  {name:<13} {help_}" for name, (_, _, help_) in COMMANDS.items())
    + """

Benchmarks print numbers and live outside the library: python scripts/benchmark.py decode|data|train|epoch
Run `captioner COMMAND --help` for the options of a command.
"""
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in TRAINER_COMMANDS:
        from captioner.train.cli import trainer_cli

        try:
            trainer_cli([command, *rest])
        except pickle.UnpicklingError as err:
            print(
                "captioner: error: the checkpoint needs arbitrary unpickling (it could run code) and was refused. "
                "If you trust the file, pass --weights_only false.\n" + str(err).splitlines()[0],
                file=sys.stderr,
            )
            return 2
        return 0
    if command not in COMMANDS:
        print(f"captioner: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[command]
    return getattr(importlib.import_module(f"captioner.cli.{module}"), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
