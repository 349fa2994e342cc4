"""Training speed options: `model.compile` (fixed caption length, one graph) and fused AdamW with clipping."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from captioner.train import Speed
from tests.helpers import built, fit, tiny_module, tiny_shapes


@pytest.mark.slow  # torch.compile of a training step: about 8 s
def test_compiled_training_pads_to_fixed_length_compiles_once_and_matches_eager(tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    data = tiny_shapes(32)
    torch.manual_seed(0)
    # aot_eager: the same dynamo graph capture and AOT autograd as the default inductor, without C++ builds
    module = tiny_module(speed=Speed(compile=True, compile_options={"backend": "aot_eager"}))
    kw = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "limit_val_batches": 0}
    fit(L.Trainer(max_steps=4, default_root_dir=tmp_path, **kw), module, data)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # 4 steps, captions of several lengths
    batches = list(data.train_dataloader())
    assert {b["input_ids"].shape[1] for b in batches} == {24}  # padded to max_length, not to the longest caption
    b = batches[0]
    module.model.eval()
    compiled = module._compiled_loss(b["images"], b["input_ids"], b["labels"])
    eager = module.model.loss(b["images"], b["input_ids"], b["labels"])
    assert torch.allclose(compiled, eager, atol=1e-5)


def test_fused_adamw_gradients_are_clipped_by_the_module():
    """Lightning refuses to clip for fused optimizers; without a loss scaler the module clips them itself."""
    torch.manual_seed(0)
    module = built(tiny_module())
    params = [p for p in module.model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 10
    optimizer = torch.optim.AdamW(params, fused=True)  # fused AdamW runs on the CPU too
    module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert abs(norm.item() - 1.0) < 1e-4
