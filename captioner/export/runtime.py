"""ONNX Runtime over what `captioner export-onnx` wrote: `captioner caption|evaluate ONNX_FOLDER --runtime onnx`.

`OnnxCaptioner` is a `captioner.decoding.CaptionModel`: the project's decoding loops (greedy, beam search,
sampling, n-best, every logit processor) run unchanged on the ONNX decoder's logits, so its captions are the
PyTorch model's token for token wherever the graphs' logits are (fp32: within 1e-4, tests/export). The encoder
graph gives the image memory and every cross-attention layer's keys/values at once; `OnnxSteps` feeds them to the
merged decoder with each row's past keys/values, which the graph returns grown by the new position.

Before a session opens, the folder is checked: its `captioner_onnx.json` (this layout's format; its graphs' names
and past shape those of config.json), the files the run needs, the tokenizer's size, and each graph's input and
output names against the model's config: a folder from another version, with a missing file or with the files
of two exports mixed is refused naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioner.config import CaptionerConfig
from captioner.decoding import GenerationConfig
from captioner.export.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    FORMAT,
    ONNX_FOLDER,
    RECORD_FILE,
    decoder_names,
    encoder_names,
    quantized_name,
    record,
)
from captioner.package import CONFIG_FILE, TOKENIZER_FILE, read_tokenizer
from captioner.preprocess import Preprocessing
from captioner.tokenizer import CaptionTokenizer

AGAIN = "export it again with this version (captioner export-onnx PACKAGE OUT)"


def read_record(folder: Path) -> dict[str, Any]:
    """The folder's `captioner_onnx.json`, checked to be this layout's format; ValueError saying what to do."""
    path = folder / RECORD_FILE
    if not path.is_file():
        if (folder / ONNX_FOLDER).is_dir():
            raise ValueError(f"{folder} holds ONNX graphs but no {RECORD_FILE}: it was written by another tool or an "
                             f"older captioner; {AGAIN}")  # fmt: skip
        raise ValueError(f"{folder} is not an ONNX export: it has no {RECORD_FILE} (write one with captioner "
                         "export-onnx PACKAGE OUT)")  # fmt: skip
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not the record captioner export-onnx writes ({err}); {AGAIN}") from err
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        shown = found.get("format") if isinstance(found, dict) else found
        version = found.get("captioner_version", "unknown") if isinstance(found, dict) else "unknown"
        raise ValueError(f"{folder} is ONNX export format {shown!r} (captioner {version}); this captioner reads "
                         f"format {FORMAT}: {AGAIN}")  # fmt: skip
    return found


def open_session(path: Path, names: tuple[list[str], list[str]], threads: int | None):
    """An onnxruntime CPU session on `path`, its input and output names checked against `names`."""
    import onnxruntime as ort

    if not path.is_file():
        raise ValueError(f"{path} is missing: the ONNX export is incomplete; {AGAIN}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception classes (InvalidProtobuf, Fail, ...): the file is bad
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({str(err).strip().splitlines()[0]}); {AGAIN}") from err
    found = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if found != names:
        raise ValueError(f"{path} does not have the inputs and outputs of this model's config (written by another "
                         f"version, or the files of two exports mixed); {AGAIN}")  # fmt: skip
    return session


@dataclass
class OnnxMemory:
    """The encoder graph's outputs for a batch: the memory (B, N, D) and each cross-attention layer's keys and
    values (B, ng, N, hs) by their decoder input name, `past_key_values.{i}.encoder.key` / `.value`."""

    memory: torch.Tensor
    image_kv: dict[str, np.ndarray]


class OnnxCaptioner:
    """An export-onnx folder on ONNX Runtime (CPU), as `captioner.decoding.CaptionModel`: `OnnxCaptioner.load`."""

    device = torch.device("cpu")

    def __init__(self, folder: Path, config: CaptionerConfig, quantized: bool, threads: int | None) -> None:
        self.folder, self.config, self.quantized = folder, config, quantized
        self.preprocessing = Preprocessing.from_dict(config.preprocessing)
        name = quantized_name if quantized else str
        self.files = [folder / ONNX_FOLDER / name(ENCODER_FILE), folder / ONNX_FOLDER / name(DECODER_FILE)]
        self.encoder = open_session(self.files[0], encoder_names(config), threads)
        self.decoder = open_session(self.files[1], decoder_names(config), threads)

    @classmethod
    def load(
        cls, folder: str | Path, quantized: bool = False, threads: int | None = None
    ) -> tuple[OnnxCaptioner, CaptionTokenizer]:
        """The model and tokenizer of the ONNX export in `folder`; `quantized` runs its int8 graphs; `threads` is
        ONNX Runtime's intra-op thread count (None: its default, the physical cores).

        Raises:
            ValueError: not an export, another version's, a file missing or unreadable (the message names it).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder (give the OUT folder of captioner export-onnx)")
        found = read_record(folder)
        for name in (CONFIG_FILE, TOKENIZER_FILE):
            if not (folder / name).is_file():
                raise ValueError(f"{folder / name} is missing: the ONNX export is incomplete; {AGAIN}")
        config = CaptionerConfig.load(folder / CONFIG_FILE)
        if not {"input_size", "mean", "std"} <= config.preprocessing.keys():  # export-onnx writes it resolved
            raise ValueError(f"{folder / CONFIG_FILE} records no resolved preprocessing; {AGAIN}")
        expected = record(config)
        for key in ("graphs", "past_shape"):
            if found.get(key) != expected[key]:
                raise ValueError(f"{folder / RECORD_FILE}: its {key} are not those of {CONFIG_FILE} (the files of two "
                                 f"exports mixed, or another version's); {AGAIN}")  # fmt: skip
        tokenizer = read_tokenizer(folder)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"{folder / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model "
                             f"{config.vocab_size} (the files of two exports mixed); {AGAIN}")  # fmt: skip
        return cls(folder, config, quantized, threads), tokenizer

    def encode(self, images: torch.Tensor) -> OnnxMemory:
        """(B, 3, H, W) preprocessed images -> their `OnnxMemory`, one encoder run."""
        pixels = images.detach().float().contiguous().numpy()
        memory, *kv = self.encoder.run(None, {"pixel_values": pixels})
        names = decoder_names(self.config)[0][1 : 1 + len(kv)]  # past_key_values.{i}.encoder.key / .value
        return OnnxMemory(torch.from_numpy(memory), dict(zip(names, kv, strict=True)))

    def decode_steps(self, memory: OnnxMemory, config: GenerationConfig) -> OnnxSteps:
        """The merged decoder over `memory`, as the decoding loops drive it."""
        return OnnxSteps(self, memory)


class OnnxSteps:
    """The merged decoder graph as `captioner.decoding.Steps`: each row's past keys/values kept as numpy arrays
    between the steps (the graph returns them grown by one position), the image keys/values repeated per row once
    per call (the graph takes one row of them for each row of tokens)."""

    def __init__(self, model: OnnxCaptioner, memory: OnnxMemory) -> None:
        self.session = model.decoder
        self.image_kv = memory.image_kv
        self.images = memory.memory.size(0)
        self.vocab_size = model.config.vocab_size
        self.device = model.device
        inputs, outputs = decoder_names(model.config)
        self.past_names = inputs[1 + len(self.image_kv) :]  # past_key_values.{i}.key / .value, block order
        self.output_names = outputs  # logits, then present.{i}.key / .value in the same order
        _, self.groups, self.head_size = model.config.heads()
        self.feed: dict[str, np.ndarray] = {}

    def start(self, rows: int, length: int) -> None:
        """`rows` rows, each image's together; `length` is not needed (the graph grows the past)."""
        per = rows // self.images
        self.feed = {name: np.repeat(kv, per, axis=0) if per > 1 else kv for name, kv in self.image_kv.items()}
        empty = np.zeros((rows, self.groups, 0, self.head_size), np.float32)  # (R, ng, 0, hs): no past yet
        self.feed |= dict.fromkeys(self.past_names, empty)

    def __call__(self, last: torch.Tensor, step: int) -> torch.Tensor:
        """(R, 1) newest tokens -> (R, V) float logits; the present keys/values become the next step's past."""
        logits, *present = self.session.run(self.output_names, {**self.feed, "input_ids": last.numpy()})
        self.feed |= dict(zip(self.past_names, present, strict=True))
        return torch.from_numpy(logits[:, -1])  # (R, V)

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i takes old row rows[i]'s past (beam search keeps each image's rows within it: the image keys and
        values stay as they are)."""
        index = rows.numpy()
        for name in self.past_names:
            self.feed[name] = self.feed[name][index]

    def close(self) -> None:
        self.feed = {}
