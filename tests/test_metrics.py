"""Our metric numbers equal pycocoevalcap's own scorers run directly on the same captions."""

import pytest

from captioner.metrics import caption_metrics, end_meteor, java_available, simple_tokenize

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

        scorer = Meteor()
        try:
            out["METEOR"] = scorer.compute_score(gts, res)[0]
        finally:
            end_meteor(scorer)
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


JAVA = [pytest.mark.skipif(not java_available(), reason="Java"), pytest.mark.slow]  # the scorers start in ~6 s


@pytest.mark.parametrize("java", [pytest.param(True, marks=JAVA), False])
def test_captions_in_any_language_score_themselves_fully(java):
    captions = {
        "fr": "à gauche, une petite croix bleue ; « déjà » vue à droite",
        "zh": "一只小猫坐在红色的垫子上",
        "emoji": "a happy dog 🐶 runs 🏃‍♂️ across the green park",
        "el": "ένας μικρός κόκκινος κύκλος και ένα μεγάλο τετράγωνο",
    }
    scores = caption_metrics(captions, {k: [v] for k, v in captions.items()}, use_java=java)
    assert scores["BLEU-4"] == pytest.approx(1.0)
    assert scores["CIDEr-D"] > 0


def test_both_tokenizers_read_words_of_any_script():
    from captioner.metrics import tokenize

    refs = {"1": ["à gauche, « déjà » vu"], "2": ["一只猫"], "3": ["a dog 🐶 runs"]}
    expected = {"1": ["à gauche déjà vu"], "2": ["一 只 猫"], "3": ["a dog runs"]}
    preds = {k: v[0] for k, v in refs.items()}
    assert tokenize(refs, preds, java=False)[0] == expected
    if java_available():
        assert tokenize(refs, preds, java=True)[0] == expected
