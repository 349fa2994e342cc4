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
    "serve": ("serve", "serve", "a page and a JSON API, batched: captioner serve MODEL_DIR (--static DIR: a folder)"),
    "export-hf": ("export", "export_hf", "write a folder transformers loads (AutoModelForImageTextToText)"),
    "export-onnx": (
        "export",
        "export_onnx",
        "write ONNX graphs: the encoder and a merged decoder with past keys/values (--web: a browser page)",
    ),
    "push": ("push", "push", "upload a model package to the Hugging Face Hub with a model card"),
    "plot": ("plot", "plot", "draw a run's training curves as PNGs: captioner plot runs/shapes/version_0"),
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

Benchmarks print numbers, outside the library: python scripts/benchmark.py decode|caption|folder|data|train|epoch|serve
Run `captioner COMMAND --help` for the options of a command.
"""
)


# what a user's input can raise: one line on stderr and exit code 2 (`--debug` shows the traceback instead)
USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError)


def user_error(err: BaseException) -> BaseException | None:
    """The user's mistake behind `err`, also when a library wrapped it (jsonargparse wraps a DataModule's errors)."""
    chain: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    ours = [e for e in chain if isinstance(e, USER_ERRORS) and type(e).__module__.startswith("captioner")]
    builtin = [e for e in chain if isinstance(e, USER_ERRORS) and type(e).__module__ == "builtins"]
    plain = [e for e in chain if isinstance(e, pickle.UnpicklingError) or e in builtin]
    found = ours or plain
    return found[0] if found else None


def one_line(err: BaseException) -> str:
    """The error's sentence on one line, a library error's arguments said as flags; for an error raised in a
    DataLoader worker (which torch re-raises with the worker's whole traceback as its message) the worker's own
    sentence."""
    from captioner.cli.common import said

    text = said(err)
    if "\nOriginal Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(f"{type(err).__module__}.{type(err).__name__}: ") else last
    return " ".join(text.split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in (*TRAINER_COMMANDS, *COMMANDS):
        print(f"captioner: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command in TRAINER_COMMANDS:
            from captioner.train.cli import trainer_cli

            trainer_cli([command, *rest])
            return 0
        module, function, _ = COMMANDS[command]
        try:
            return getattr(importlib.import_module(f"captioner.cli.{module}"), function)(rest)
        except SystemExit as done:  # --help, or a flag refused by the parser (its one line is printed)
            return done.code if isinstance(done.code, int) else 2
    except Exception as err:  # sorted into the user's mistakes and bugs here
        found = user_error(err)
        if debug or found is None:
            raise
        if isinstance(found, pickle.UnpicklingError):
            message = (
                "the checkpoint needs arbitrary unpickling (it could run code) and was refused; if you trust "
                f"the file, pass --weights_only false ({str(found).splitlines()[0]})"
            )
        else:
            message = one_line(found)
        print(f"captioner: error: {message} (--debug shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
