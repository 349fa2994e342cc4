"""CIDEr-D as a training reward: pycocoevalcap's scorer (`Cider`, which is CIDEr-D: clipped tf-idf n-gram
similarity with a Gaussian length penalty, x10) with its document frequencies fixed once, from the training
references, and the similarities of many hypotheses against their references computed in one batch of tensor
operations.

The n-grams of a caption are counted in Python (a dictionary per caption); everything after that (tf-idf
vectors, clipping, norms, penalties, the mean over references and n-gram orders) runs on (S, R, U) tensors, where
S hypotheses are scored against R references each over the U n-grams that occur in the batch. Captions are
tokenized with `captioner.metrics.simple_tokenize` (pure Python; the PTB tokenizer of reported scores needs a Java
process per call). Equal to pycocoevalcap's CiderScorer over the same corpus and tokens (tests/test_cider.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from captioner.metrics import simple_tokenize

Ngrams = Counter  # n-gram (tuple of words) -> count


def ngrams(text: str, n: int = 4) -> Ngrams:
    """Counts of the 1..n-grams of an already tokenized caption (words split by spaces), as pycocoevalcap's precook."""
    words = text.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D with document frequencies from a fixed corpus of references (a list of caption lists, one per image)."""

    def __init__(self, corpus: Iterable[Sequence[str]], n: int = 4, sigma: float = 6.0, tokenize: bool = True) -> None:
        self.n, self.sigma, self.tokenize = n, sigma, tokenize
        self.df: Counter = Counter()
        images = 0
        for refs in corpus:  # an n-gram counts once per image, whichever of its references holds it
            self.df.update({g for ref in refs for g in ngrams(self._tok(ref), n)})
            images += 1
        if images == 0:
            raise ValueError("CIDEr-D needs at least one image's references for its document frequencies")
        self.log_images = math.log(float(images))

    def _tok(self, text: str) -> str:
        return simple_tokenize(text) if self.tokenize else text

    def __call__(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> torch.Tensor:
        """(S,) float64 CIDEr-D of each hypothesis against its own references (references[i] for hypotheses[i])."""
        S, n = len(hypotheses), self.n
        if S != len(references) or any(len(r) == 0 for r in references):
            raise ValueError("one non-empty list of references per hypothesis")
        hyp = [ngrams(self._tok(h), n) for h in hypotheses]
        refs = [[ngrams(self._tok(r), n) for r in rs] for rs in references]
        R = max(len(r) for r in refs)
        ids: dict[tuple[str, ...], int] = {}
        for counts in [*hyp, *(c for rs in refs for c in rs)]:
            for g in counts:
                ids.setdefault(g, len(ids))
        U = len(ids)
        idf = torch.tensor([self.log_images - math.log(max(1.0, self.df[g])) for g in ids], dtype=torch.float64)
        order = torch.tensor([len(g) - 1 for g in ids], dtype=torch.long)  # (U,): 0 for unigrams .. n-1
        H = torch.zeros(S, U, dtype=torch.float64)  # term frequencies
        Rf = torch.zeros(S, R, U, dtype=torch.float64)
        for s, counts in enumerate(hyp):
            H[s, [ids[g] for g in counts]] = torch.tensor(list(counts.values()), dtype=torch.float64)
        for s, rs in enumerate(refs):
            for r, counts in enumerate(rs):
                Rf[s, r, [ids[g] for g in counts]] = torch.tensor(list(counts.values()), dtype=torch.float64)
        has_ref = torch.tensor([[r < len(rs) for r in range(R)] for rs in refs])  # (S, R)
        bigram = order == 1
        len_h, len_r = H[:, bigram].sum(-1), Rf[:, :, bigram].sum(-1)  # pycocoevalcap's "length": bigram count
        H, Rf = H * idf, Rf * idf  # tf-idf
        onehot = torch.nn.functional.one_hot(order, n).to(torch.float64)  # (U, n)
        clipped = (torch.minimum(H[:, None, :], Rf) * Rf * (H[:, None, :] > 0)) @ onehot  # (S, R, n)
        norm_h = ((H**2) @ onehot).sqrt()  # (S, n)
        norm_r = ((Rf**2) @ onehot).sqrt()  # (S, R, n)
        denom = norm_h[:, None, :] * norm_r
        val = torch.where(denom > 0, clipped / torch.where(denom > 0, denom, 1.0), clipped)  # (S, R, n)
        penalty = torch.exp(-((len_h[:, None] - len_r) ** 2) / (2 * self.sigma**2))  # (S, R)
        val = val * penalty[:, :, None] * has_ref[:, :, None]
        return val.sum(1).mean(-1) / has_ref.sum(1) * 10.0  # mean over orders, over references; x10
