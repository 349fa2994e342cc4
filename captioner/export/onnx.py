"""`captioner export-onnx PACKAGE OUT`: the model as two ONNX graphs, in the layout optimum and transformers.js use.

Written: `onnx/encoder_model.onnx` (pixel_values (B, 3, H, W) -> `last_hidden_state`, the image memory (B, N, D),
and `present.{i}.encoder.key` / `.value` (B, ng, N, hs) of every cross-attention block i, computed once per image)
and `onnx/decoder_model_merged.onnx` (`input_ids` (B, T), `past_key_values.{i}.encoder.key` / `.value` of each
cross-attention block, `past_key_values.{i}.key` / `.value` (B, ng, P, hs) of every block, P = 0 at the first
step -> `logits` (B, T, V) and `present.{i}.key` / `.value` (B, ng, P + T, hs); the new tokens hold positions
[P, P + T)). Every `present.X` output feeds the `past_key_values.X` input of the next step. Each has an int8
variant, `encoder_model_quantized.onnx` and `decoder_model_merged_quantized.onnx`. Beside them: the model's
config.json (its preprocessing resolved), the package's tokenizer.json, special_tokens.json and training.json
(`captioner evaluate` reads its held-out pairs), export-hf's generation_config.json and preprocessor_config.json,
and `captioner_onnx.json`, the record `captioner caption --runtime onnx` checks (this layout's format number, the
captioner version, each graph's inputs and outputs); with `--web`, web/: a static page that captions in the
browser (`captioner.export.web`). Each graph passes `onnx.checker`; the folder is written beside OUT and renamed
into place.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import torch

from captioner.config import CaptionerConfig
from captioner.export.onnx_graphs import DecoderStepGraph, ImageGraph
from captioner.model import Captioner
from captioner.outputs import atomic_folder, check_apart
from captioner.package import CONFIG_FILE, SPECIAL_FILE, TOKENIZER_FILE, TRAINING_FILE

ONNX_FOLDER = "onnx"
ENCODER_FILE, DECODER_FILE = "encoder_model.onnx", "decoder_model_merged.onnx"
QUANTIZED = "_quantized"  # encoder_model_quantized.onnx: the int8 variant of encoder_model.onnx (transformers.js)
EXTERNAL_DATA_BYTES = 1 << 30  # graphs with more weights keep them in a `.data` file beside them (protobuf's 2 GB)
RECORD_FILE = "captioner_onnx.json"  # what wrote the folder, checked by `captioner.export.runtime`
FORMAT = 1  # this layout's number: a change of names, inputs or files that older readers cannot run raises it


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder `export-onnx` wrote (it holds the record), rather than a model package."""
    return (Path(path) / RECORD_FILE).is_file()


def encoder_names(config: CaptionerConfig) -> tuple[list[str], list[str]]:
    """The encoder graph's input and output names."""
    kv = [f"present.{i}.encoder.{part}" for i in config.cross_layers() for part in ("key", "value")]
    return ["pixel_values"], ["last_hidden_state", *kv]


def decoder_names(config: CaptionerConfig) -> tuple[list[str], list[str]]:
    """The merged decoder graph's input and output names."""
    cross = [f"past_key_values.{i}.encoder.{part}" for i in config.cross_layers() for part in ("key", "value")]
    past = [f"past_key_values.{i}.{part}" for i in range(config.n_layer) for part in ("key", "value")]
    present = [f"present.{i}.{part}" for i in range(config.n_layer) for part in ("key", "value")]
    return ["input_ids", *cross, *past], ["logits", *present]


def record(config: CaptionerConfig) -> dict:
    """`captioner_onnx.json`: the format, the version that wrote it, the graphs' files and names, and the shape of
    a past key/value input (the key/value heads and head size), which the browser page reads."""
    graphs = {ENCODER_FILE: encoder_names(config), DECODER_FILE: decoder_names(config)}
    _, groups, head_size = config.heads()
    return {
        "format": FORMAT,
        "captioner_version": version("captioner"),  # pyproject.toml's, as installed
        "graphs": {name: {"inputs": i, "outputs": o} for name, (i, o) in graphs.items()},
        "quantized": [quantized_name(name) for name in graphs],
        "past_shape": ["batch_size", groups, "past_sequence_length", head_size],  # of each past_key_values.{i}.*
    }


def reason(err: BaseException) -> str:
    """The first line of the innermost cause of an exporter's error (its outer ones say which step failed), without
    terminal colours."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def export_graph(
    part: str, graph: torch.nn.Module, args: tuple, dynamic: dict, names: tuple[list[str], list[str]], path: Path
) -> None:
    """Trace `graph` on `args` with torch.onnx's dynamo exporter into `path`, then `onnx.checker` it.

    Args:
        part: what the graph is ("encoder", "decoder"), for the error.
        graph: the module in eval mode; `args` its example inputs.
        dynamic: torch.export's dynamic shapes of each argument, by name.
        names: the graph's input and output names (flattened as the exporter flattens lists).
        path: the .onnx file; weights over `EXTERNAL_DATA_BYTES` go to `path` + ".data".

    Raises:
        ValueError: the exporter failed (the message names `part` and the innermost reason).
    """
    import onnx

    external = sum(p.numel() * p.element_size() for p in graph.parameters()) > EXTERNAL_DATA_BYTES
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=names[0],
                output_names=names[1],
                verbose=False,
            )
    except Exception as err:  # torch.export's errors have many classes; the user needs the part and the reason
        raise ValueError(f"the {part} of this package cannot be exported to ONNX: {reason(err)}") from err
    assert program is not None
    program.save(str(path), external_data=external)
    onnx.checker.check_model(str(path), full_check=True)


def export_encoder(model: Captioner, path: Path) -> list[torch.Tensor]:
    """`encoder_model.onnx` of `model` into `path`; returns the image keys/values [k, v, ...] (B, ng, N, hs) of two
    random images, the example the decoder is traced with."""
    _, height, width = model.preprocessing.input_size
    pixels = torch.randn(2, 3, height, width)  # (B, 3, H, W): two images, so that the batch stays a dimension
    graph = ImageGraph(model).eval()
    dynamic = {"pixel_values": {0: torch.export.Dim("batch_size", min=1)}}
    export_graph("encoder", graph, (pixels,), dynamic, encoder_names(model.config), path)
    with torch.no_grad():
        return list(graph(pixels)[1:])


def export_decoder(model: Captioner, image_kv: list[torch.Tensor], path: Path) -> None:
    """`decoder_model_merged.onnx` of `model` into `path`, traced on `image_kv` (from `export_encoder`), two tokens
    and a past of three positions."""
    c = model.config
    _, groups, head_size = c.heads()
    batch, steps = torch.export.Dim("batch_size", min=1), torch.export.Dim("sequence_length", min=1)
    past = torch.export.Dim("past_sequence_length", min=0)
    B = image_kv[0].size(0)
    input_ids = torch.zeros(B, 2, dtype=torch.long)  # (B, T)
    past_kv = [torch.zeros(B, groups, 3, head_size) for _ in range(2 * c.n_layer)]  # (B, ng, P, hs)
    dynamic = {
        "input_ids": {0: batch, 1: steps},
        "image_kv": [{0: batch}] * len(image_kv),
        "past": [{0: batch, 2: past}] * len(past_kv),
    }
    graph = DecoderStepGraph(model.decoder).eval()
    export_graph("decoder", graph, (input_ids, image_kv, past_kv), dynamic, decoder_names(model.config), path)


def quantized_name(name: str) -> str:
    """`encoder_model.onnx` -> `encoder_model_quantized.onnx`."""
    return name.removesuffix(".onnx") + QUANTIZED + ".onnx"


def quantize(path: Path) -> Path:
    """The int8 variant of the graph at `path` beside it (ONNX Runtime's dynamic quantization: int8 weights of the
    MatMuls, one scale per output channel, activations quantized per call), checked. The weights use 7 of the 8
    bits (`reduce_range`, as transformers.js's quantize script): on x86 CPUs without VNNI the u8 x s8 products
    saturate their 16-bit sums otherwise; measured on a random tiny decoder with outlying weights, the largest
    logit error fell from 16 % to 4-7 % of the largest logit (tests/export/test_onnx.py)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(quantized_name(path.name))
    external = path.with_name(path.name + ".data").exists()  # the weights beside a large graph (`export_graph`)
    quantize_dynamic(
        path,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        use_external_data_format=external,
    )
    onnx.checker.check_model(str(target), full_check=True)
    return target


def write_graphs(model: Captioner, folder: Path) -> None:
    """The graphs of `model` (fp32) into `folder`/onnx, their int8 variants, the resolved config.json and the
    record: what `captioner.export.runtime.OnnxCaptioner` runs (the tokenizer files aside)."""
    (folder / ONNX_FOLDER).mkdir()
    image_kv = export_encoder(model, folder / ONNX_FOLDER / ENCODER_FILE)
    export_decoder(model, image_kv, folder / ONNX_FOLDER / DECODER_FILE)
    for name in (ENCODER_FILE, DECODER_FILE):
        quantize(folder / ONNX_FOLDER / name)
    model.config.save(folder / CONFIG_FILE)  # resolved: the preprocessing recorded even for an old package
    (folder / RECORD_FILE).write_text(json.dumps(record(model.config), indent=2) + "\n", encoding="utf-8")


def export_onnx(
    package: str | Path,
    out: str | Path,
    overwrite: bool = False,
    web: bool = False,
    onnxruntime_web: str | Path | None = None,
) -> Path:
    """Write the ONNX folder of `package` (a folder or Hub repo id) to `out` (see the module's docstring); `out` may
    not be the package, lie inside it or hold it (OutputError), nor exist unless `overwrite` (OutputExists).

    Args:
        web: also write `out/web/`, the page that captions in the browser (`captioner.export.web`).
        onnxruntime_web: with `web`, onnxruntime-web's dist folder to copy its wasm backend from (default: npm
            installs the pinned version into a cache folder once).

    Raises:
        ValueError: the encoder or the decoder of the package cannot be traced (the message names which), or with
            `web` its tokenizer is not byte-level.
        RuntimeFilesMissing: with `web`, onnxruntime-web's files cannot be had (checked before the export).
    """
    from captioner.export import web as page
    from captioner.hf.export import generation_config, image_processor
    from captioner.hub import resolve_package

    folder = resolve_package(package)
    check_apart([out], [folder], "out")
    dist = None
    if web:
        page.check_tokenizer(folder / TOKENIZER_FILE)
        dist = page.onnxruntime_web(onnxruntime_web)
    model, tokenizer = Captioner.from_pretrained(folder)
    model.float()  # the graphs are fp32
    with atomic_folder(Path(out), overwrite) as tmp:
        write_graphs(model, tmp)
        for name in (TOKENIZER_FILE, TRAINING_FILE):  # training.json: the held-out pairs, for evaluate
            if (folder / name).is_file():  # a package without training.json (saved from Python) has none
                shutil.copyfile(folder / name, tmp / name)
        # the ids as the tokenizer resolved them: also for a package from before special_tokens.json
        (tmp / SPECIAL_FILE).write_text(json.dumps(tokenizer.special) + "\n", encoding="utf-8")
        generation_config(tokenizer, model.config.block_size).save_pretrained(tmp)
        image_processor(model.preprocessing).save_pretrained(tmp)
        if dist is not None:
            page.write_page(tmp, dist)
    return Path(out)
