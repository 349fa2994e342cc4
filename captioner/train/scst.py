"""Self-critical sequence training (Rennie et al. 2017; the "new SCST" baseline of Luo 2020): a second training
stage that optimises CIDEr-D itself. `model.scst: {}` in a config turns it on (configs/scst.yaml).

Per image, K captions are sampled from the model (`generate` with sampling: the image's cross-attention
keys/values are computed once and shared by its K samples); each is rewarded with its CIDEr-D against the image's
references (document frequencies from the training references, fixed once: `captioner.cider.CiderD`); the
baseline is the mean reward of the image's other K - 1 samples (default) or the reward of its greedy caption; the
loss is -(reward - baseline) x the sum of the sample's token log-probs, recomputed with gradients by one
teacher-forced pass (a sample that ended scores its EOS; one cut by the token limit has none). Neither the reward
nor the baseline carries a gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F

from captioner.cider import CiderD
from captioner.generate import GenerationConfig, Hypothesis, SpecialIds, generate
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer
from captioner.train.modes import eval_mode

REWARD = "CIDEr-D"  # what each sample is rewarded with (captioner.cider.CiderD), as training.json names it


@dataclass
class SCST:
    """Options of self-critical training (`model.scst`).

    Args:
        samples: captions sampled per image (K).
        baseline: `mean` of the image's other samples' rewards, or the reward of its `greedy` caption.
        max_new_tokens: token limit of a sample (None: the model's block size).
        reference_images: training images whose references give CIDEr-D's document frequencies.
    """

    samples: int = 5
    baseline: Literal["mean", "greedy"] = "mean"
    max_new_tokens: int | None = None
    reference_images: int = 20_000


class SelfCritical:
    """The SCST loss of a batch, with what it logs."""

    def __init__(self, options: SCST) -> None:
        if options.samples < 2 and options.baseline == "mean":
            raise ValueError("model.scst.samples must be at least 2 with the mean baseline (or use baseline: greedy)")
        self.options = options
        self.cider: CiderD | None = None
        self._references: Callable[[int], Iterable[list[str]]] | None = None

    def fit(self, references: Callable[[int], Iterable[list[str]]]) -> None:
        """Where the training references come from (`references(limit)`: caption lists, one per image); CIDEr-D's
        document frequencies are computed from them once, at the first training step (validate, test and predict
        runs never pay for them)."""
        self._references = references

    def scorer(self) -> CiderD:
        if self.cider is None:
            if self._references is None:
                raise RuntimeError("SelfCritical.fit(training references) first (captioner.train.connect does it)")
            self.cider = CiderD(self._references(self.options.reference_images))
        return self.cider

    def training_step(
        self, module: L.LightningModule, model: Captioner, tokenizer: CaptionTokenizer, batch: dict[str, Any]
    ) -> torch.Tensor:
        """The loss of a training batch of `module`'s model, logged (`train/loss`, `train/scst_reward`, `_baseline`,
        `_beat_baseline`, `_sample_length`)."""
        loss, stats = self.loss(model, tokenizer, batch)
        B = len(batch["references"])
        module.log("train/loss", loss, prog_bar=True, batch_size=B)
        module.log("train/scst_reward", stats.pop("reward"), prog_bar=True, batch_size=B)
        module.log_dict({f"train/scst_{k}": v for k, v in stats.items()}, batch_size=B)
        return loss

    def loss(
        self, model: Captioner, tokenizer: CaptionTokenizer, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cider = self.scorer()
        K = self.options.samples
        if "features" in batch:  # the feature cache: the frozen backbone's patch tokens (B, N, De)
            memory = model.encoder.project(batch["features"])  # (B, N, D)
        else:
            memory = model.encode(batch["images"])  # (B, N, D), with gradients where the encoder trains
        B = memory.size(0)
        sampling = GenerationConfig(max_new_tokens=self.options.max_new_tokens, do_sample=True, num_return_sequences=K)
        greedy = None
        with eval_mode(model):  # sampling without dropout, as the captions will be used
            hyps = [h for image in generate(model, None, tokenizer, sampling, memory.detach()) for h in image]  # B*K
            if self.options.baseline == "greedy":
                plain = GenerationConfig(self.options.max_new_tokens)
                greedy = generate(model, None, tokenizer, plain, memory.detach())
        refs = batch["references"]
        texts = [tokenizer.decode(h.tokens) for h in hyps]
        rewards = cider(texts, [refs[i // K] for i in range(B * K)]).view(B, K).float()  # (B, K)
        if greedy is None:
            baseline = others_mean(rewards)
        else:
            g = cider([tokenizer.decode(h[0].tokens) for h in greedy], refs).float()  # (B,)
            baseline = g[:, None].expand(B, K)
        logprobs = sequence_logprobs(model, memory, hyps, tokenizer).view(B, K)  # (B, K), with gradients
        loss = policy_loss(logprobs, rewards.to(memory.device), baseline.to(memory.device))
        stats = {
            "reward": float(rewards.mean()),
            "baseline": float(baseline.mean()),
            "beat_baseline": float((rewards > baseline).float().mean()),
            "sample_length": sum(len(h.tokens) for h in hyps) / len(hyps),
        }
        return loss, stats


def others_mean(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) rewards -> (B, K): each sample's baseline, the mean reward of its image's other K - 1 samples."""
    K = rewards.size(1)
    return (rewards.sum(1, keepdim=True) - rewards) / (K - 1)


def policy_loss(logprobs: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """-(reward - baseline) x log-prob, averaged over the (B, K) samples; the advantage carries no gradient."""
    advantage = (rewards - baseline).detach()
    return -(advantage * logprobs).mean()


def sequence_logprobs(
    model: Captioner, memory: torch.Tensor, hyps: list[Hypothesis], special: SpecialIds
) -> torch.Tensor:
    """(B*G,) sums of the log-probs of each hypothesis's tokens (and its EOS when it ended), by one teacher-forced
    pass; `hyps` hold G per image of memory (B, N, D), grouped image by image."""
    rows = [[*h.tokens, *([] if h.truncated else [special.eos_id])] for h in hyps]
    T = max(len(r) for r in rows)
    target = torch.full((len(rows), T), -100, dtype=torch.long, device=memory.device)  # (BG, T); -100: padding
    for i, r in enumerate(rows):
        target[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    inputs = torch.cat([torch.full_like(target[:, :1], special.bos_id), target[:, :-1]], dim=1).clamp(min=0)
    kv = model.image_kv(memory)  # per image: shared by its G rows by broadcasting
    logits = model.decoder.logits(model.decoder.hidden(inputs, kv)).float()  # (BG, T, V)
    logp = -F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")  # (BG, T)
    return logp.sum(1)
