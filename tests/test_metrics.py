"""Our metric numbers equal pycocoevalcap's own scorers run directly on the same captions."""

import pytest

from captioner.metrics import caption_metrics, java_available, simple_tokenize

REFS = {
    "1": ["A man riding a horse on a beach.", "a person rides a horse along the shore", "man on horseback, beach"],
    "2": ["Two dogs play with a red ball.", "two dogs playing with a ball", "dogs chasing a red ball on grass"],
    "3": ["A plate of food with broccoli.", "food on a white plate", "a plate with broccoli and rice"],
}
PREDS = {"1": "a man riding a horse on the beach", "2": "two dogs playing with a red ball", "3": "a plate of food"}


def direct(gts, res, meteor: bool) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    out = {f"BLEU-{i + 1}": b for i, b in enumerate(Bleu(4).compute_score(gts, res, verbose=0)[0])}
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        out["METEOR"] = Meteor().compute_score(gts, res)[0]
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr-D"] = Cider().compute_score(gts, res)[0]
    return out


@pytest.mark.slow  # three Java scorers started: about 15 s, kept out of the fast set
@pytest.mark.skipif(not java_available(), reason="Java is needed for the PTB tokenizer and METEOR")
def test_metrics_equal_pycocoevalcap_with_java():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": PREDS[k]}] for k in REFS})
    ours = caption_metrics(PREDS, REFS, use_java=True)
    assert ours == pytest.approx(direct(gts, res, meteor=True), abs=1e-12)
    assert set(ours) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert ours["CIDEr-D"] > 0.5 and ours["BLEU-1"] > 0.6


def test_metrics_without_java_skip_meteor_and_match_the_scorers():
    gts = {k: [simple_tokenize(c) for c in v] for k, v in REFS.items()}
    res = {k: [simple_tokenize(PREDS[k])] for k in REFS}
    with pytest.warns(UserWarning, match="Java not found") if not _warned() else _nothing():
        ours = caption_metrics(PREDS, REFS, use_java=False)
    assert "METEOR" not in ours
    assert ours == pytest.approx(direct(gts, res, meteor=False), abs=1e-12)


def test_simple_tokenizer_matches_ptb_on_plain_captions():
    assert simple_tokenize("A man, riding a horse... on the beach!") == "a man riding a horse on the beach"
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        caps = [c for v in REFS.values() for c in v]
        ptb = PTBTokenizer().tokenize({str(i): [{"caption": c}] for i, c in enumerate(caps)})
        assert [ptb[str(i)][0] for i in range(len(caps))] == [simple_tokenize(c) for c in caps]


def _warned() -> bool:
    import captioner.metrics

    return captioner.metrics._warned


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
