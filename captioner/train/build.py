"""Building the model a training run starts from, sized from its tokenizer: from scratch, from a model package
(fine-tuning) or from a pretrained language model; which parameters train (the fine-tuning policies); new-token
embeddings drawn like the trained ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from captioner.config import CaptionerConfig
from captioner.decoder import is_inserted
from captioner.model import Captioner
from captioner.norms import NORM_TYPES
from captioner.package import read_training
from captioner.tokenizer import CaptionTokenizer
from captioner.train.lora import add_lora
from captioner.train.parameters import is_adapted, is_adapter, is_lm
from captioner.train.settings import Finetuning


def build_model(
    config: CaptionerConfig | None,
    tokenizer: CaptionTokenizer,
    package: Path | None = None,
    finetuning: Finetuning | None = None,
    extend: int = 0,
) -> Captioner:
    """The model of a run, sized from its resolved tokenizer (`train.vocabulary`), its trainable parameters set
    by `finetuning.policy`.

    Args:
        config: the architecture (default `CaptionerConfig()`); ignored with `package`. Its `vocab_size` becomes
            the tokenizer's; a pretrained language model (`decoder_init_from`) brings its own, which the tokenizer
            must fit in (its ids below the LM's vocab_size).
        tokenizer: the run's tokenizer; one extended by up to `extend` tokens grows the embeddings (`grow_vocab`).
        package: a model package to fine-tune: its config and weights are used.
    """
    finetuning = finetuning or Finetuning()
    if package is not None:
        model, _ = Captioner.from_pretrained(package)
        model.train()
        embeddings_train = finetuning.policy != "cross_attention" and not finetuning.freeze_lm
        if finetuning.reinit_unused_tokens and embeddings_train:
            reinit_unused_embeddings(model, package)
        if finetuning.block_size is not None:
            grow_positions(model, finetuning.block_size)
        start = f"init_from={package}"
    else:
        config = config or CaptionerConfig()
        if not config.decoder_init_from:
            config = replace(config, vocab_size=tokenizer.vocab_size)
        model = Captioner(config)  # a pretrained LM's decoder is sized from its checkpoint here
        start = f"config.decoder_init_from={config.decoder_init_from}"
    own = model.config.vocab_size
    # a model may have more embedding rows than its tokenizer has tokens (many LMs pad vocab_size), never fewer,
    # except for the tokens `extend` added, which grow it
    if tokenizer.vocab_size > own + extend:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens, beyond the {own} token embeddings of {start}: give "
            "the tokenizer its weights were trained with (leave tokenizer.path unset to use the package's or the "
            "language model's own; tokenizer.extend adds tokens to it)"
        )
    if finetuning.freeze_lm and not model.config.decoder_init_from:
        raise ValueError(
            f"finetune.freeze_lm freezes a pretrained language model, and {start} has none: set "
            "config.decoder_init_from (or init_from a package made from one)"
        )
    if finetuning.freeze_lm and extend:
        raise ValueError(
            f"finetune.freeze_lm freezes the token embeddings, where the tokens of tokenizer.extend={extend} would "
            "have to learn: unset one of them"
        )
    # new tokens start from their pieces' embeddings: in a padded vocabulary's spare rows (which the language model
    # never trained), then in rows appended beyond them
    base = tokenizer.extended_from
    if base is not None and base < min(own, tokenizer.vocab_size):
        set_rows(model, {i: parts for i, parts in tokenizer.pieces(base).items() if i < own})
    if tokenizer.vocab_size > own:
        grow_vocab(model, tokenizer.pieces(own))
    if "vision" in finetuning.lora.groups and finetuning.encoder_frozen_epochs:
        raise ValueError("finetune.lora.groups: vision adapts a backbone that encoder_frozen_epochs would thaw; "
                         "use one of them")  # fmt: skip
    add_lora(model, finetuning.lora)
    apply_finetune_policy(model, finetuning.policy, finetuning.freeze_lm)
    if finetuning.frozen_lm_dtype == "bfloat16":
        hold_frozen_lm(model, torch.bfloat16)
    return model


def _set_config(model: Captioner, config: CaptionerConfig) -> None:
    model.config = model.decoder.config = config


def grow_vocab(model: Captioner, pieces: dict[int, list[int]]) -> None:
    """Append token rows to the embedding and the LM head (tied or not): new token `i` starts as the mean of the
    rows of the existing tokens it replaces (`pieces[i]`, from `CaptionTokenizer.pieces`), so that it begins as what
    the model read and wrote for those pieces; every existing row, and so the logits over existing tokens, stays as
    it was."""
    decoder = model.decoder
    V, C = decoder.wte.weight.shape
    if sorted(pieces) != list(range(V, V + len(pieces))):
        raise ValueError(f"new token ids must follow the model's {V} tokens: got {sorted(pieces)[:3]}...")
    tied, frozen = decoder.lm_head.weight is decoder.wte.weight, not decoder.wte.weight.requires_grad
    decoder.wte = nn.Embedding(V + len(pieces), C, _weight=_grown(decoder.wte.weight, pieces), _freeze=frozen)
    head = decoder.lm_head.weight
    decoder.lm_head = nn.Linear(C, V + len(pieces), bias=False, device=head.device, dtype=head.dtype)
    decoder.lm_head.weight = decoder.wte.weight if tied else _grown(head, pieces)
    _set_config(model, replace(model.config, vocab_size=V + len(pieces)))


def set_rows(model: Captioner, pieces: dict[int, list[int]]) -> None:
    """Rows `pieces` of the embedding and the LM head (tied or not) set to the mean of the rows of their pieces, in
    place (new tokens in a padded vocabulary's spare rows; `grow_vocab` appends rows instead)."""
    decoder = model.decoder
    with torch.no_grad():
        for weight in {id(w): w for w in (decoder.wte.weight, decoder.lm_head.weight)}.values():
            for i, parts in pieces.items():
                weight[i] = weight[parts].mean(0)


def _grown(old: torch.Tensor, pieces: dict[int, list[int]]) -> nn.Parameter:
    """(V, C) rows + one per new token, the mean of its pieces' rows; trainable as `old` was."""
    with torch.no_grad():
        new = torch.stack([old[p].mean(0) for _, p in sorted(pieces.items())]) if pieces else old[:0]  # (N, C)
        return nn.Parameter(torch.cat([old, new]), requires_grad=old.requires_grad)  # (V + N, C)


def grow_positions(model: Captioner, block_size: int) -> None:
    """Grow the learned position embeddings to `block_size` positions: each new one starts as a copy of the last
    learned position (extrapolating by the nearest; interpolating would move the positions the model knows), so
    a caption that fitted before is computed exactly as before. Rotary positions need no weights: their tables
    are computed for the new length."""
    T = model.config.block_size
    if block_size < T:
        raise ValueError(f"finetune.block_size={block_size} is below the package's {T}; it can only grow")
    if block_size == T:
        return
    if model.decoder.wpe is None:
        _set_config(model, replace(model.config, block_size=block_size))
        if model.decoder.rope is not None:
            model.decoder.rope.config = model.config
            model.decoder.rope.init_non_persistent_buffers()
        return
    wpe = model.decoder.wpe.weight  # (T, C)
    with torch.no_grad():
        weight = nn.Parameter(torch.cat([wpe, wpe[-1:].expand(block_size - T, -1)]), requires_grad=wpe.requires_grad)
    model.decoder.wpe = nn.Embedding(block_size, wpe.size(1), _weight=weight)
    model.decoder.wpe.weight.requires_grad_(wpe.requires_grad)
    _set_config(model, replace(model.config, block_size=block_size))


def apply_finetune_policy(model: Captioner, policy: str, freeze_lm: bool = False) -> None:
    """Set `requires_grad` for a fine-tuning policy (`Finetuning`); with `freeze_lm` the language model's own
    tensors are frozen too. LoRA adapters always train and the Linear weights they adapt never do."""
    if policy not in ("full", "freeze_encoder", "cross_attention"):
        raise ValueError(f"unknown finetune policy {policy!r}; choose full, freeze_encoder or cross_attention")
    for name, p in model.named_parameters():
        if is_adapter(name) or is_adapted(name):
            p.requires_grad_(is_adapter(name))
        elif freeze_lm and is_lm(name):
            p.requires_grad_(False)
        elif policy == "full":
            p.requires_grad_(True)
        elif policy == "freeze_encoder":
            p.requires_grad_(not name.startswith("encoder.backbone."))
        else:
            p.requires_grad_(is_inserted(name) or _is_norm(model, name))


def hold_frozen_lm(model: Captioner, dtype: torch.dtype) -> None:
    """Store the frozen tensors of the language model (with `freeze_lm`, or adapted by LoRA) in `dtype`, the
    trained ones as they are; the forward pass then needs autocast to that dtype (`trainer.precision`)."""
    frozen = [p for name, p in model.named_parameters() if is_lm(name) and not p.requires_grad]
    if not frozen:
        raise ValueError(
            "finetune.frozen_lm_dtype holds a frozen language model in bfloat16, and no language model tensor is "
            "frozen: set finetune.freeze_lm (or LoRA on lm_attention / lm_mlp)"
        )
    for p in frozen:
        p.data = p.data.to(dtype)


def _is_norm(model: nn.Module, param_name: str) -> bool:
    module = model.get_submodule(param_name.rsplit(".", 1)[0])
    return isinstance(module, NORM_TYPES)


def reinit_unused_embeddings(model: Captioner, package: str | Path) -> int:
    """Re-initialise the token embeddings the package never trained, drawn like the trained ones (per-dimension
    mean and standard deviation of the used rows, as transformers' mean-resizing does for new tokens), so that new
    words start on the scale of the known ones rather than far off or collapsed.

    The unused rows (tokens the package's training captions never held, listed in its training.json) hold no
    learned meaning: with tied embeddings, Adam moves every unused row along the same direction at every step, so
    they end up collapsed onto one large vector that new words would first have to climb out of."""
    info = read_training(package)
    used = info.used_token_ids if info else None
    if not used or len(used) < 2:
        return 0
    weight = model.decoder.wte.weight  # tied with lm_head, or the head's rows are kept as they are
    unused = torch.ones(weight.size(0), dtype=torch.bool, device=weight.device)
    unused[torch.tensor(used, dtype=torch.long, device=weight.device)] = False
    with torch.no_grad():
        known = weight[~unused]  # (U, C)
        noise = torch.randn(int(unused.sum()), weight.size(1), dtype=weight.dtype, device=weight.device)
        weight[unused] = known.mean(0) + noise * known.std(0)
    return int(unused.sum())
