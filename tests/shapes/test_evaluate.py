"""The image-blind control captions every scene from another scene's image, whatever the count and batch size."""

import pytest
import torch

from captioner.shapes.evaluate import evaluate_shapes
from captioner.shapes.scenes import make_scene


@pytest.mark.parametrize(("count", "batch_size"), [(1, 100), (3, 2), (4, 4)])  # (3, 2): a last batch of one
def test_the_blind_control_never_shows_a_scene_its_own_image(tiny_model, tokenizer, count, batch_size):
    seen: list[torch.Tensor] = []
    encode = tiny_model.encode
    tiny_model.encode = lambda images: seen.append(images) or encode(images)
    transform = tiny_model.preprocessing.eval_transform()
    metrics, _ = evaluate_shapes(
        tiny_model, tokenizer, "test", count, batch_size=batch_size, blind=True, progress=False
    )
    shown = torch.cat(seen)  # (count, 3, H, W): the images the captions were made from
    assert metrics["count"] == count and shown.size(0) == count
    for i in range(count):
        assert not torch.equal(shown[i], transform(make_scene("test", i).image))
        assert torch.equal(shown[i], transform(make_scene("test", i + 1).image))
