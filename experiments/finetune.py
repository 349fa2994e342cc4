"""Fine-tuning experiment: from the English shapes package to captions in French, which its tokenizer never saw.

The new data: shapes scenes (one to three objects, as the demo's) captioned in French with agreement and
punctuation the shapes data never had: "à gauche, une petite croix bleue ; à droite, un grand cercle vert",
"trois formes : « un petit carré rouge », « une grande croix jaune » et « un petit triangle violet »". Under the
package's byte-level BPE (347 tokens, trained on English) accents cost two bytes and every French word several
tokens: a two-object caption needs about 55 tokens, more than the package's 40.

Four runs with the same step budget and the same architecture:
- plain: `configs/finetune.yaml` from the package, its tokenizer and block size as they are (`data.truncate:
  true`, since `fit` refuses to cut that many captions silently);
- vocabulary extended: the same with `model.extend_vocab` (new BPE tokens learned from the French captions, their
  embeddings started from the pieces they replace);
- vocabulary and length: also `model.block_size` (and `data.max_length`) grown, so that no caption is cut;
- from scratch: `configs/pairs.yaml` with the package's architecture and a tokenizer trained on the French captions.

Prints, for the validation scenes captioned by each exported package: exact object lists and attribute accuracy
(the French read back to (size, colour, shape)), CIDEr-D against the three French references (pycocoevalcap),
the share of captions cut by the token limit, and the training captions' token lengths.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from pathlib import Path

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig
from captioner.inference import caption
from captioner.metrics import caption_metrics
from captioner.model import Captioner
from captioner.outputs import write_jsonl
from captioner.shapes import make_scene, score
from captioner.tokenizer import CaptionTokenizer
from captioner.train.cli import trainer_cli

FEMININE = {"cross"}  # la croix; le cercle, le carré, le triangle
NOUN = {"circle": "cercle", "square": "carré", "triangle": "triangle", "cross": "croix"}
SIZE = {"small": ("petit", "petite"), "large": ("grand", "grande")}
COLOUR = {
    "red": ("rouge", "rouge"),
    "green": ("vert", "verte"),
    "blue": ("bleu", "bleue"),
    "yellow": ("jaune", "jaune"),
    "purple": ("violet", "violette"),
    "orange": ("orange", "orange"),
}
COUNT = {1: "une forme", 2: "deux formes", 3: "trois formes"}


def phrase(o) -> str:
    """'une petite croix bleue': article, size before the noun, colour after, both agreeing with the noun."""
    f = int(o.shape in FEMININE)
    return f"{('un', 'une')[f]} {SIZE[o.size][f]} {NOUN[o.shape]} {COLOUR[o.color][f]}"


def french_caption(objects: list, rng: random.Random) -> str:
    """One of several templates, objects named left to right."""
    names = [phrase(o) for o in objects]
    if len(names) == 1:
        return rng.choice([names[0], f"on voit {names[0]}", f"l'image montre {names[0]}"])
    if len(names) == 2 and rng.random() < 0.4:
        return f"à gauche, {names[0]} ; à droite, {names[1]}"
    listed = ", ".join(names[:-1]) + f" et {names[-1]}"
    quoted = ", ".join(f"« {n} »" for n in names[:-1]) + f" et « {names[-1]} »"
    return rng.choice([f"{COUNT[len(names)]} : {quoted}", f"de gauche à droite, {listed}", listed])


WORD = {w: k for k, forms in {**SIZE, **COLOUR}.items() for w in forms} | {v: k for k, v in NOUN.items()}
FRENCH_PHRASE = re.compile(
    rf"\b(?:un|une) ({'|'.join(w for f in SIZE.values() for w in f)}) ({'|'.join(NOUN.values())}) "
    rf"({'|'.join(sorted({w for f in COLOUR.values() for w in f}, key=len, reverse=True))})\b"
)


def to_shapes_words(text: str) -> str:
    """The French object phrases read back as 'small blue cross' (what the shapes scorer parses), in order."""
    return " , ".join(f"{WORD[s]} {WORD[c]} {WORD[n]}" for s, n, c in FRENCH_PHRASE.findall(text))


def write_set(directory: Path, split: str, count: int) -> list:
    rng = random.Random(split)
    (directory / "images").mkdir(parents=True)
    rows, scenes = [], []
    for index in range(count):
        scene = make_scene(split, index)
        name = f"images/{index:05d}.png"
        scene.image.save(directory / name)
        rows.append({"file_name": name, "text": [french_caption(scene.objects, rng) for _ in range(3)]})
        scenes.append(scene)
    write_jsonl(directory / "metadata.jsonl", rows)
    return scenes


def token_lengths(tokenizer: CaptionTokenizer, texts: list[str]) -> dict[str, float]:
    lengths = [len(tokenizer.encode(t)) for t in texts]
    return {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)}


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="finetune_experiment_"))
    base = Path(args.base)
    write_set(work / "train", "train", args.train_images)
    val_scenes = write_set(work / "val", "val", args.val_images)
    references = {str(i): json.loads(line)["text"] for i, line in enumerate((work / "val/metadata.jsonl").open())}
    common = [
        f"--trainer.max_steps={args.steps}",
        f"--trainer.val_check_interval={args.steps}",
        f"--trainer.logger.init_args.save_dir={work / 'runs'}",
        f"--data.init_args.train={work / 'train'}",
        f"--data.init_args.val={work / 'val'}",
        f"--data.init_args.batch_size={args.batch_size}",
        "--data.init_args.num_workers=0",
        f"--model.optimizer.lr={args.lr}",
    ]
    cfg = CaptionerConfig.load(base / "config.json")
    scratch_model = [
        f"--model.config.{k}={v if isinstance(v, str) else json.dumps(v)}"
        for k, v in cfg.to_dict().items()
        if k not in ("vocab_size", "preprocessing")
    ]
    finetune = [
        "--config",
        "configs/finetune.yaml",
        f"--model.init_from={base}",
        "--model.optimizer.encoder_lr_mult=1.0",
    ]
    extend = f"--model.tokenizer.extend={args.extend_vocab}"
    runs = {
        "plain (package tokenizer, truncate: true)": [*finetune, "--data.init_args.captions.truncate=true"],
        f"vocabulary extended (extend_vocab={args.extend_vocab})": [*finetune, extend],
        f"vocabulary and length (+ block_size={args.block_size})": [
            *finetune,
            extend,
            f"--model.finetune.block_size={args.block_size}",
            f"--data.init_args.captions.max_length={args.block_size}",
        ],
        "from scratch (same architecture)": [
            "--config",
            "configs/pairs.yaml",
            "--model.tokenizer.vocab_size=512",
            *scratch_model,
        ],
    }
    texts = [t for line in (work / "train/metadata.jsonl").open() for t in json.loads(line)["text"]]
    results = {}
    for name, cli_args in runs.items():
        cli = trainer_cli(["fit", *cli_args, *common])
        package = next(c for c in cli.trainer.callbacks if hasattr(c, "exported")).exported
        model, tok = Captioner.from_pretrained(package)
        found = caption([s.image for s in val_scenes], model, tok, GenerationConfig())
        texts_out = [c.text for c in found]
        shapes = score([to_shapes_words(t) for t in texts_out], [s.objects for s in val_scenes])
        metrics = caption_metrics({str(i): t for i, t in enumerate(texts_out)}, references)
        results[name] = {
            "vocab_size": tok.vocab_size,
            "block_size": model.config.block_size,
            "train_caption_tokens": token_lengths(tok, texts),
            "val_loss": round(float(cli.trainer.callback_metrics["val/loss"]), 4),
            "exact_match": shapes["exact_match"],
            "attribute_accuracy": round(shapes["attribute_accuracy"], 4),
            "CIDEr-D": round(metrics["CIDEr-D"], 4),
            "BLEU-4": round(metrics["BLEU-4"], 4),
            "truncated_share": sum(c.truncated for c in found) / len(found),
            "samples": texts_out[:3],
        }
    return {"steps": args.steps, "batch_size": args.batch_size, "base": str(base), "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/finetune_experiment.py", description=__doc__)
    parser.add_argument("--base", required=True, help="a shapes model package (make demo writes runs/shapes/*/model)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--extend-vocab", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=64, help="the grown block size of the fourth run")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=200)
    report = run(parser.parse_args(argv))
    print(json.dumps(report, indent=2, ensure_ascii=False))
    for name, r in report["runs"].items():
        print(
            f"{name:<48} exact {r['exact_match']:.1%}  attr {r['attribute_accuracy']:.1%}  CIDEr-D "
            f"{r['CIDEr-D']:.3f}  truncated {r['truncated_share']:.1%}  caption tokens {r['train_caption_tokens']}"
        )
    return 0
