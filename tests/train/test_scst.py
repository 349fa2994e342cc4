"""Self-critical training: the loss uses the log-probs generation sampled with, moves them the right way, and never
differentiates the baseline; a short SCST run from a package trains, logs its rewards and exports."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from captioner.generate import GenerationConfig, generate
from captioner.train.scst import SCST, SelfCritical, others_mean, policy_loss, sequence_logprobs
from tests.test_generate import IDS, make_model


@pytest.mark.parametrize(("max_new", "style"), [(4, "gpt"), (12, "gpt"), (12, "llama")])  # 4: most samples cut
def test_sampled_logprobs_equal_the_teacher_forced_pass(images, max_new, style):  # by the limit (no EOS to score)
    model = make_model(3, eos_bias=2.0, style=style)
    memory = model.encode(images)
    cfg = GenerationConfig(do_sample=True, num_return_sequences=4, max_new_tokens=max_new, seed=0)
    hyps = [h for image in generate(model, None, IDS, cfg, memory) for h in image]
    ended = [not h.truncated for h in hyps]
    assert any(ended) and (max_new == 12 or not all(ended))  # 4: both kinds; 12: samples whose EOS is scored too
    recomputed = sequence_logprobs(model, memory, hyps, IDS)
    assert recomputed.requires_grad
    assert torch.allclose(recomputed.detach(), torch.tensor([h.logprob for h in hyps]), atol=1e-4)


def test_one_step_raises_the_sample_above_its_baseline_and_lowers_the_one_below(images):
    model = make_model(1, eos_bias=1.0)
    memory = model.encode(images[:1]).detach()
    cfg = GenerationConfig(do_sample=True, num_return_sequences=2, max_new_tokens=6, seed=3)
    hyps = generate(model, None, IDS, cfg, memory)[0]
    assert hyps[0].tokens != hyps[1].tokens
    rewards = torch.tensor([[1.0, 0.0]])  # sample 0 beats the other's reward, sample 1 falls below it
    before = sequence_logprobs(model, memory, hyps, IDS).detach()
    optimizer = torch.optim.SGD(model.decoder.parameters(), lr=1e-3)
    policy_loss(sequence_logprobs(model, memory, hyps, IDS).view(1, 2), rewards, others_mean(rewards)).backward()
    optimizer.step()
    after = sequence_logprobs(model, memory, hyps, IDS).detach()
    assert after[0] > before[0] and after[1] < before[1]


def test_no_gradient_reaches_the_reward_or_the_baseline():
    rewards = torch.tensor([[0.5, 1.0, 2.0]], requires_grad=True)
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    baseline = others_mean(rewards)
    assert torch.allclose(baseline, torch.tensor([[1.5, 1.25, 0.75]]))
    policy_loss(logprobs, rewards, baseline).backward()
    assert rewards.grad is None
    assert torch.allclose(logprobs.grad, -(rewards - baseline).detach() / 3)


def test_the_mean_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="samples"):
        SelfCritical(SCST(samples=1))
    SelfCritical(SCST(samples=1, baseline="greedy"))


@pytest.mark.slow  # a training run (about 15 s)
@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_a_short_scst_run_from_a_package(trained_package, tmp_path, baseline):
    from captioner.cli import main
    from tests.helpers import ROOT

    args = [
        "fit",
        "--config",
        str(ROOT / "configs/scst.yaml"),
        f"--model.init_from={trained_package}",
        f"--model.scst.baseline={baseline}",
        "--model.scst.samples=3",
        "--model.scst.reference_images=100",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=4",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_size=8",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    assert main(args) == 0
    (run,) = tmp_path.glob("scst/version_*")
    rows = [r for r in csv.DictReader((run / "metrics.csv").read_text().splitlines()) if r.get("train/scst_reward")]
    reward, base = ([float(r[f"train/scst_{k}"]) for r in rows] for k in ("reward", "baseline"))
    assert len(rows) == 4
    if baseline == "mean":  # each sample's baseline is the mean of its image's others: on average the reward itself
        assert reward == pytest.approx(base, abs=1e-5)
    else:  # the greedy caption's reward: another number than the samples' mean
        assert any(abs(r - b) > 1e-6 for r, b in zip(reward, base, strict=True))
    logged = csv.DictReader((run / "metrics.csv").read_text().splitlines())
    validation = [float(r["val/CIDEr-D"]) for r in logged if r.get("val/CIDEr-D")]
    assert len(validation) == 1 and validation[0] >= 0
    start, trained = (load_file(p / "model.safetensors") for p in (trained_package, run / "model"))
    moved = {k for k in start if not torch.equal(start[k], trained[k])}
    # biases have no weight decay: only a gradient moves them, so the policy gradient reached the decoder
    assert any(k.startswith("decoder.") and k.endswith(".bias") for k in moved)
    info = json.loads((run / "model" / "training.json").read_text())  # how it was made
    assert info["objective"] == {"name": "scst", "reward": "CIDEr-D", "baseline": baseline, "samples": 3}
    assert info["started_from"] == {"path": str(trained_package.resolve())}
    assert info["optimizer"]["lr"] == 1e-5 and info["optimizer"]["min_lr_ratio"] == 1.0  # configs/scst.yaml
    assert info["steps"] == 4 and info["config"] == json.loads((run / "model" / "config.json").read_text())
