"""Training with Lightning: the module, how its model is built, optimisation, callbacks, checkpoint IO and the CLI.

The library (model, data, inference) never imports this package.
"""

from captioner.train.callbacks import CaptionWriter, ExportModelPackage, PreemptionCheckpoint
from captioner.train.checkpoint_io import AtomicCheckpointIO
from captioner.train.connect import connect
from captioner.train.figures import ValidationFigures
from captioner.train.module import CaptionerModule
from captioner.train.progress import StepProgressBar
from captioner.train.run_folder import RunFolder
from captioner.train.settings import Finetuning, Lora, Optimizer, Speed, TokenizerSource, Validation
from captioner.train.throughput import TrainingThroughput

__all__ = [
    "AtomicCheckpointIO",
    "CaptionWriter",
    "CaptionerModule",
    "ExportModelPackage",
    "Finetuning",
    "Lora",
    "Optimizer",
    "PreemptionCheckpoint",
    "RunFolder",
    "Speed",
    "StepProgressBar",
    "TokenizerSource",
    "TrainingThroughput",
    "Validation",
    "ValidationFigures",
    "connect",
]
