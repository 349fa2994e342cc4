"""CIDEr-D as a training reward: pycocoevalcap's scorer (`Cider`, which is CIDEr-D: clipped tf-idf n-gram
similarity with a Gaussian length penalty, x10) with its document frequencies fixed once, from the training
references, and the similarities of many hypotheses against their references computed in one batch of tensor
operations.

The n-grams of a caption are counted in Python (a dictionary per caption; the references once per distinct
list: the K samples of an image share its references); everything after that (tf-idf vectors, clipping, norms,
penalties, the mean over references and n-gram orders) runs on (S, R, U) tensors, where S hypotheses are scored
against R references each over U n-gram slots (per hypothesis: those of its references, then its own that they
lack). Captions are tokenized with `captioner.metrics.simple_tokenize` (pure Python; the PTB tokenizer of
reported scores needs a Java process per call). Equal to pycocoevalcap's CiderScorer over the same corpus and
tokens (tests/test_cider.py).
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
        # n-gram slots per distinct reference list (the K samples of an image share one), then per hypothesis the
        # slots of its n-grams that its references lack
        groups: dict[tuple[str, ...], int] = {}
        group_of = [groups.setdefault(tuple(rs), len(groups)) for rs in references]
        slots: list[dict[tuple[str, ...], int]] = []
        ref_rows: list[tuple[int, int, int, int]] = []  # (group, reference, slot, count)
        for g, rs in enumerate(groups):
            table: dict[tuple[str, ...], int] = {}
            for r, ref in enumerate(rs):
                for gram, c in ngrams(self._tok(ref), n).items():
                    ref_rows.append((g, r, table.setdefault(gram, len(table)), c))
            slots.append(table)
        hyp_rows: list[tuple[int, int, int]] = []  # (hypothesis, slot, count)
        hyp_gram: list[tuple[str, ...]] = []  # the n-gram of each row
        for s_, (text, g) in enumerate(zip(hypotheses, group_of, strict=True)):
            table = slots[g]
            extra: dict[tuple[str, ...], int] = {}  # its n-grams the references lack -> their slot after the table's
            for gram, c in ngrams(self._tok(text), n).items():
                u = table.get(gram)
                hyp_rows.append((s_, u if u is not None else len(table) + extra.setdefault(gram, len(extra)), c))
                hyp_gram.append(gram)
        G, R = len(groups), max(len(rs) for rs in groups)
        U = max([len(t) for t in slots] + [u + 1 for _, u, _ in hyp_rows])
        f64 = torch.float64
        # idf and n-gram order of every slot: the groups' slots, then each hypothesis's extra ones
        idf_g, order_g = torch.zeros(G, U, dtype=f64), torch.full((G, U), -1, dtype=torch.long)
        for g, table in enumerate(slots):
            idf_g[g, : len(table)] = torch.tensor([self._idf(gram) for gram in table], dtype=f64)
            order_g[g, : len(table)] = torch.tensor([len(gram) - 1 for gram in table], dtype=torch.long)
        group = torch.tensor(group_of)
        idf, order = idf_g[group], order_g[group]  # (S, U)
        hs, hu, hc = torch.tensor(hyp_rows, dtype=torch.long).reshape(-1, 3).unbind(1)  # (rows,) each
        idf[hs, hu] = torch.tensor([self._idf(gram) for gram in hyp_gram], dtype=f64)
        order[hs, hu] = torch.tensor([len(gram) - 1 for gram in hyp_gram], dtype=torch.long)
        H = torch.zeros(S, U, dtype=f64)  # term frequencies
        H[hs, hu] = hc.to(f64)
        Rg = torch.zeros(G, R, U, dtype=f64)
        rg, rr, ru, rc = torch.tensor(ref_rows, dtype=torch.long).reshape(-1, 4).unbind(1)  # (rows,) each
        Rg[rg, rr, ru] = rc.to(f64)
        Rf = Rg[group]  # (S, R, U)
        has_ref = (torch.arange(R)[None] < torch.tensor([len(rs) for rs in groups])[:, None])[group]  # (S, R)
        bigram = (order == 1).to(f64)  # (S, U)
        len_h, len_r = (H * bigram).sum(-1), (Rf * bigram[:, None]).sum(-1)  # pycocoevalcap's "length": bigrams
        H, Rf = H * idf, Rf * idf[:, None]  # tf-idf
        onehot = torch.nn.functional.one_hot(order.clamp(min=0), n).to(f64) * (order >= 0)[..., None]  # (S, U, n)
        clipped = torch.einsum("sru,sun->srn", torch.minimum(H[:, None], Rf) * Rf, onehot)  # (S, R, n)
        norm_h = torch.einsum("su,sun->sn", H**2, onehot).sqrt()  # (S, n)
        norm_r = torch.einsum("sru,sun->srn", Rf**2, onehot).sqrt()  # (S, R, n)
        denom = norm_h[:, None, :] * norm_r
        val = torch.where(denom > 0, clipped / torch.where(denom > 0, denom, 1.0), clipped)  # (S, R, n)
        penalty = torch.exp(-((len_h[:, None] - len_r) ** 2) / (2 * self.sigma**2))  # (S, R)
        val = val * penalty[:, :, None] * has_ref[:, :, None]
        return val.sum(1).mean(-1) / has_ref.sum(1) * 10.0  # mean over orders, over references; x10

    def _idf(self, gram: tuple[str, ...]) -> float:
        return self.log_images - math.log(max(1.0, self.df[gram]))
