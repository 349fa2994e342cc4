"""Self-critical training: the loss uses the log-probs generation sampled with, moves them the right way, and never
differentiates the baseline; a short SCST run from a package trains, logs its rewards and exports."""

import csv

import pytest
import torch

from captioner.generate import GenerationConfig, generate
from captioner.train.scst import SCST, SelfCritical, others_mean, policy_loss, sequence_logprobs
from tests.test_generate import IDS, make_model


@pytest.mark.parametrize("max_new", [4, 12])  # 4: most samples cut by the limit (no EOS to score)
def test_sampled_logprobs_equal_the_teacher_forced_pass(images, max_new):
    model = make_model(3, eos_bias=2.0)
    memory = model.encode(images)
    cfg = GenerationConfig(do_sample=True, num_return_sequences=4, max_new_tokens=max_new, seed=0)
    hyps = [h for image in generate(model, None, IDS, cfg, memory) for h in image]
    assert {h.truncated for h in hyps} == {True, False} or max_new == 12
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
        "fit", "--config", str(ROOT / "configs/scst.yaml"), f"--model.init_from={trained_package}",
        f"--model.scst.baseline={baseline}", "--model.scst.samples=3", "--model.scst.reference_images=100",
        "--trainer.max_steps=4", "--trainer.val_check_interval=4", "--trainer.log_every_n_steps=1",
        "--data.init_args.batch_size=4", "--data.init_args.val_size=8",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip
    assert main(args) == 0
    (run,) = tmp_path.glob("scst/version_*")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    rewards = [float(r["train/scst_reward"]) for r in rows if r.get("train/scst_reward")]
    assert len(rewards) == 4 and all(r >= 0 for r in rewards)
    assert any(r.get("val/CIDEr-D") for r in rows)
    assert (run / "model" / "model.safetensors").is_file()
