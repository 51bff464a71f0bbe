"""Speaker-verification figures: EER of cosine scores over all pairs of utterance embeddings."""
from __future__ import annotations

import numpy as np


class UnscorableSet(ValueError):
    """Too few speakers or pairs for an EER; `split` names the held-out set when known."""

    def __init__(self, message: str, split: str = ""):
        super().__init__(message)
        self.split = split


def pair_scores(embeddings: np.ndarray, speakers: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-speaker flag for every unordered pair (embeddings L2-normalised)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    i, j = np.triu_indices(len(e), k=1)
    labels = np.asarray(speakers)
    return (e[i] * e[j]).sum(axis=1), labels[i] == labels[j]


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false-accept and false-reject rates are equal."""
    from sklearn.metrics import roc_curve

    if same.all() or not same.any():
        raise UnscorableSet("EER needs both same- and different-speaker pairs")
    # every threshold: the thinned curve can skip the one where false accepts equal false rejects
    fpr, tpr, thresholds = roc_curve(same, scores, drop_intermediate=False)
    fnr = 1 - tpr
    k = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[k] + fnr[k]) / 2), float(thresholds[k])


def misclassification_rate(embeddings: np.ndarray, speakers: list[str] | np.ndarray, threshold: float) -> float:
    """ZHAW protocol: items clustered by average-linkage AHC on cosine distance, cut at `threshold`;
    speakers and clusters are matched one to one (Hungarian), and MR is the fraction of items outside
    their speaker's matched cluster."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=threshold).fit_predict(embeddings)
    names, spk = np.unique(np.asarray(speakers), return_inverse=True)
    counts = np.zeros((len(names), labels.max() + 1))
    np.add.at(counts, (spk, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(1 - counts[rows, cols].sum() / len(labels))


def zhaw_items(embeddings: np.ndarray, speakers: list[str], first: int = 8, last: int = 2
               ) -> tuple[np.ndarray, list[str]]:
    """Per speaker (in order of appearance), one item from the mean of its first `first` utterances and
    one from its last `last`; speakers with fewer than first + last utterances are left out."""
    items, owners = [], []
    for spk in dict.fromkeys(speakers):
        rows = np.flatnonzero(np.asarray(speakers) == spk)
        if len(rows) < first + last:
            continue
        for part in (rows[:first], rows[-last:]):
            mean = embeddings[part].mean(axis=0)
            items.append(mean / max(np.linalg.norm(mean), 1e-12))
            owners.append(spk)
    return np.array(items), owners


def zhaw_mr(embeddings: np.ndarray, speakers: list[str], n_test: int = 40) -> dict[str, float]:
    """MR on the first `n_test` speakers, with the threshold chosen on the remaining speakers (the one
    minimising their MR), never the oracle minimum on the test speakers."""
    items, owners = zhaw_items(embeddings, speakers)
    names = list(dict.fromkeys(owners))
    test = np.isin(owners, names[:n_test])
    if test.all() or not test.any():
        raise ValueError(f"the ZHAW protocol needs more than {n_test} speakers with 10 utterances")
    # as in the pipeline, each set is centred on its own mean (no labels used): the embeddings share a
    # common direction that would squeeze all cosine distances towards 0
    centred = lambda x: x - x.mean(axis=0)
    grid = np.linspace(0.05, 1.5, 59)
    dev_owners = [o for o, t in zip(owners, test) if not t]
    dev_mr = [misclassification_rate(centred(items[~test]), dev_owners, t) for t in grid]
    threshold = float(grid[int(np.argmin(dev_mr))])
    test_owners = [o for o, t in zip(owners, test) if t]
    return {"mr": misclassification_rate(centred(items[test]), test_owners, threshold), "mr_threshold": threshold,
            "mr_speakers": int(test.sum() // 2)}
