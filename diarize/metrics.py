"""Speaker-verification figures: EER of cosine scores over all pairs of utterance embeddings."""
from __future__ import annotations

import numpy as np


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
        raise ValueError("EER needs both same- and different-speaker pairs")
    fpr, tpr, thresholds = roc_curve(same, scores)
    fnr = 1 - tpr
    k = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[k] + fnr[k]) / 2), float(thresholds[k])
