"""Runs that go wrong: non-finite losses are skipped and counted, then stop the run with a message."""

import lightning as L
import pytest
import torch

from captioner.train import Optimizer, connect
from tests.helpers import fit, tiny_module, tiny_shapes


def setup(max_nonfinite: int, nan_steps: set[int]):
    module = tiny_module(optimizer=Optimizer(max_nonfinite_steps=max_nonfinite))
    data = tiny_shapes(64)
    connect(module, data)
    real_loss = module.model.loss
    calls = {"n": 0}

    def loss(*args):
        out = real_loss(*args)
        step, calls["n"] = calls["n"], calls["n"] + 1
        return out * float("nan") if step in nan_steps else out

    module.model.loss = loss
    return module, data


def trainer(tmp_path, steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )


def test_nan_step_is_skipped_and_counted(tmp_path):
    module, data = setup(max_nonfinite=3, nan_steps={2})
    snapshots = []

    class Snap(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots.append(pl_module.model.decoder.ln_f.weight.detach().clone())

    t = trainer(tmp_path, 4)
    t.callbacks.append(Snap())
    fit(t, module, data)
    assert module.nonfinite.skipped == 1
    assert torch.equal(snapshots[1], snapshots[2])  # the NaN batch changed nothing
    assert not torch.equal(snapshots[2], snapshots[3])  # and training went on
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_stream_of_nans_stops_with_a_message(tmp_path):
    module, data = setup(max_nonfinite=3, nan_steps=set(range(2, 100)))
    with pytest.raises(FloatingPointError, match=r"not finite for 3 steps in a row.*learning rate.*lower optimizer.lr"):
        fit(trainer(tmp_path, 10), module, data)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    from captioner.cli import main
    from tests.helpers import ROOT

    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Evil(str(marker))}, tmp_path / "last.ckpt")
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        f"--ckpt_path={tmp_path / 'last.ckpt'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--model.tokenizer.train_captions=200",
    ]
    assert main(args) == 2
    assert "refused" in capsys.readouterr().err and not marker.exists()


def test_resume_from_our_own_checkpoint_loads_weights_only(trained_package, tmp_path):
    from captioner.cli import main
    from tests.helpers import ROOT, TINY_MODEL

    ckpt = next(trained_package.parent.glob("checkpoints/last.ckpt"))
    loaded = torch.load(ckpt, weights_only=True)  # no arbitrary unpickling needed
    assert loaded["global_step"] == 4
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        *TINY_MODEL,
        f"--ckpt_path={ckpt}",
        "--data.init_args.train_size=64",
        "--data.init_args.val_size=16",
        "--data.init_args.batch_size=8",
        "--model.tokenizer.train_captions=800",
        "--trainer.max_steps=6",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    assert main(args) == 0
    resumed = torch.load(next(tmp_path.glob("shapes/version_*/checkpoints/last.ckpt")), weights_only=True)
    assert resumed["global_step"] == 6


def test_crash_between_temp_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import os

    from captioner.train.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def crash(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_unknown_config_key_is_named(tmp_path, capsys):
    from captioner.cli import main
    from tests.helpers import ROOT

    (tmp_path / "bad.yaml").write_text("model:\n  lrr: 0.1\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(ROOT / "configs/shapes.yaml"), "--config", str(tmp_path / "bad.yaml")])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert "lrr" in err
