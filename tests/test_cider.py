"""The CIDEr-D reward equals pycocoevalcap's scorer over the same corpus and tokens."""

import random

import pytest
import torch

from captioner.cider import CiderD
from captioner.metrics import simple_tokenize
from captioner.shapes.scenes import captions, scene_objects


def corpus(n: int, seed: int) -> tuple[list[list[str]], list[str]]:
    """Shapes references (4 wordings per scene), and hypotheses that are a reference, a damaged one or another's."""
    rng = random.Random(seed)
    refs = [[simple_tokenize(c) for c in captions(scene_objects("train", i, [], 3))] for i in range(n)]
    hyps = []
    for i, rs in enumerate(refs):
        words = rng.choice(rs).split()
        kind = i % 4
        if kind == 1:
            words = words[: max(1, len(words) - rng.randint(1, 4))]
        elif kind == 2:
            words = [*words, *rng.choice(refs[(i + 1) % n]).split()[:3]]
        elif kind == 3:
            words = rng.choice(refs[(i + 7) % n]).split()
        hyps.append(" ".join(words))
    hyps[0] = ""  # an empty caption scores 0
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocoevalcap_over_the_same_corpus(seed):
    from pycocoevalcap.cider.cider import Cider

    refs, hyps = corpus(60, seed)
    refs[5] = refs[5][:2]  # images with fewer references
    _, theirs = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    ours = CiderD(refs, tokenize=False)(hyps, refs)
    assert ours.dtype == torch.float64 and ours.shape == (60,)
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64), rtol=0, atol=1e-9)
    assert float(ours[0]) == 0.0 and float(ours.max()) > 1.0


def test_document_frequencies_come_from_the_corpus_not_the_batch():
    refs, hyps = corpus(40, 0)
    scorer = CiderD(refs, tokenize=False)
    one = scorer(hyps[5:6], refs[5:6])
    batch = scorer(hyps[:20], refs[:20])
    assert torch.equal(one, batch[5:6])  # a hypothesis scores the same alone or in any batch


def test_tokenizes_like_the_metrics_and_refuses_missing_references():
    scorer = CiderD([["A red circle.", "a red circle"], ["a blue square"]])
    a = scorer(["A RED circle!"], [["a red circle", "A red circle."]])
    b = scorer(["a red circle"], [["a red circle", "a red circle"]])
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="references"):
        scorer(["a"], [[]])
