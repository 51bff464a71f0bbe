"""Clustering segment embeddings into speakers. The count is estimated with thresholds calibrated for the
encoder (calibration.py): centroid-linkage AHC (default) or HDBSCAN; a given count uses spectral clustering."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .calibration import MAX_SPEAKERS, Calibration, normalise

MIN_CLUSTER_SHARE = 0.02  # a speaker holds at least this share of the segments (and `min_cluster_size`)
MAX_POINTS = 2000  # above this many segments, cluster a seeded sample and assign the rest to its centroids
AHC_POINTS = 1000  # centroid linkage keeps an n x n similarity matrix: a sample of at most this many
NO_CALIBRATION = ("estimating the speaker count needs the model's calibration: give the count, or calibrate the "
                  "model on held-out speakers (diarize validate DATA --calibrate MODEL)")


def cluster_embeddings(x: np.ndarray, method: str = "ahc", num_speakers: int | None = None,
                       min_speakers: int = 1, max_speakers: int | None = None,
                       calibration: Calibration | None = None, min_cluster_size: int = 3, seed: int = 0,
                       max_points: int = MAX_POINTS) -> np.ndarray:
    """Speaker label (0..k-1) of each L2-normalised (recording-centred) embedding; none is left unlabelled.

    `num_speakers` gives exactly that many (capped at the number of segments; `_exactly`). Otherwise `method`
    estimates the count with the encoder's `calibration`:
    "ahc": the two speakers with the most similar centroids merge while their similarity reaches
    calibration.merge_similarity; speakers under `min_cluster_size` segments (or MIN_CLUSTER_SHARE of them)
    join the nearest one; then the closest merge while the split into k is less clear (silhouette) than
    calibration.min_silhouette_for(k), the silhouette a split of one voice into k reaches.
    "hdbscan": density clusters, with the same silhouette rule (a speaker whose two halves pass it splits) and
    speakers at calibration.same_voice similarity merged.
    An estimate outside [min_speakers, max_speakers] is redone with the count clamped (`_exactly`).
    """
    n = len(x)
    if max_speakers is not None and min_speakers > max_speakers:
        raise ValueError(f"min_speakers {min_speakers} is above max_speakers {max_speakers}")
    if n <= 1:
        return np.zeros(n, dtype=int)
    if n > max_points:  # bounded time and memory on hours of audio
        return _on_sample(x, max_points, seed, lambda s: cluster_embeddings(
            s, method, num_speakers, min_speakers, max_speakers, calibration, min_cluster_size, seed, max_points))
    min_size = max(2, min(max(min_cluster_size, round(MIN_CLUSTER_SHARE * n)), n // 2))
    if num_speakers is not None:
        return _exactly(x, min(num_speakers, n), calibration, min_size, seed)
    if calibration is None:
        raise ValueError(NO_CALIBRATION)
    if method == "ahc":
        labels = _ahc(x, calibration, min_size, seed)
    elif method == "hdbscan":
        labels = _hdbscan(x, calibration, min_size, seed)
    else:
        raise ValueError(f"unknown clustering method {method!r}; use ahc or hdbscan")
    k = len(set(labels))
    lo, hi = min(min_speakers, n), min(max_speakers or n, n)
    if not lo <= k <= hi:
        labels = _exactly(x, min(max(k, lo), hi), calibration, min_size, seed)
    return labels


def _exactly(x: np.ndarray, k: int, calibration: Calibration | None, min_size: int, seed: int) -> np.ndarray:
    """Exactly k speakers: the calibrated centroid linkage's speakers (those under `min_size` absorbed), the
    closest merged down to k; spectral clustering where the linkage finds fewer, or without a calibration.
    Told the count, development suite DER 5.8 / 13.8 / 24.1 / 52.4% against 5.9 / 18.2 / 26.8 / 52.4% for
    spectral clustering alone."""
    if len(x) > AHC_POINTS:
        return _on_sample(x, AHC_POINTS, seed, lambda s: _exactly(s, k, calibration, min_size, seed))
    if calibration is not None and k > 1:
        labels = _linked(x, calibration, min_size)
        if labels.max() + 1 >= k:
            return _merge_closest(x, labels, lambda merged, _: merged.max() + 1 > k)
    return _spectral(x, k, seed)


def _ahc(x: np.ndarray, calibration: Calibration, min_size: int, seed: int) -> np.ndarray:
    """The one-voice test, then centroid linkage stopped at the calibrated similarity, small clusters absorbed,
    and the closest merged while the split is less clear than the calibrated silhouette."""
    if len(x) > AHC_POINTS:
        return _on_sample(x, AHC_POINTS, seed, lambda s: _ahc(s, calibration, min_size, seed))
    # one voice: none of its best splits into 2 to MAX_SPEAKERS is clearer than the calibration's splits of
    # one voice into as many (four voices can split in two no more clearly than one voice does)
    unclear = _unclear(x, calibration)
    counts = range(2, min(MAX_SPEAKERS, len(x) - 1) + 1)
    if all(unclear(split, 0.0) for split in _spectral_splits(x, counts, seed).values()):
        return np.zeros(len(x), dtype=int)
    return _merge_closest(x, _linked(x, calibration, min_size), unclear)


def _linked(x: np.ndarray, calibration: Calibration, min_size: int) -> np.ndarray:
    """The calibrated linkage's speakers: centroid linkage stopped at calibration.merge_similarity, speakers
    under `min_size` segments joined to the nearest."""
    return assign_to_nearest(x, _centroid_linkage(x, calibration.merge_similarity), min_size=min_size)


def _centroid_linkage(x: np.ndarray, stop: float) -> np.ndarray:
    """Agglomerative clustering from single segments: the two clusters whose normalised mean embeddings are
    most similar (cosine) merge, until no two are at least `stop` similar."""
    n = len(x)
    sums, labels, alive = x.astype(np.float64), np.arange(n), np.ones(n, bool)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    while alive.sum() > 1:
        a, b = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[a, b] < stop:
            break
        sums[a] += sums[b]
        labels[labels == b] = a
        alive[b] = False
        means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        row = means @ means[a]
        row[~alive] = -np.inf
        row[a] = -np.inf
        sim[a, :], sim[:, a] = row, row
        sim[b, :], sim[:, b] = -np.inf, -np.inf
    return _relabel(labels)


def _unclear(x: np.ndarray, calibration: Calibration) -> Callable[[np.ndarray, float], bool]:
    """merge(labels, _) for `_merge_closest`: the split into k speakers is less clear than the calibration's
    splits of one voice into k reach (calibration.min_silhouette_for)."""
    from sklearn.metrics import silhouette_score

    def unclear(labels: np.ndarray, _) -> bool:
        k = labels.max() + 1
        return k >= len(x) or silhouette_score(x, labels, metric="cosine") < calibration.min_silhouette_for(k)

    return unclear


PRUNING = (0.05, 0.1, 0.15, 0.2, 0.3)  # shares of nearest neighbours each segment keeps in the affinity
SPECTRAL_POINTS = 1000  # spectral clustering decomposes an n x n matrix: a sample of at most this many


def _spectral(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Spectral clustering into exactly `n_clusters` on a pruned affinity: each segment links to its
    p-share most similar segments (binarised, symmetrised), with p chosen where the gap after the
    n_clusters-th Laplacian eigenvalue is largest relative to p (NME-SC, Park et al. 2019); k-means on
    the eigenvectors. On the dev conversations with the true count (an interim encoder): 9.9% DER
    against 14.3% for average-linkage AHC."""
    n = len(x)
    if n_clusters <= 1 or n_clusters >= n:
        return np.arange(n) if n_clusters >= n else np.zeros(n, dtype=int)
    if n > SPECTRAL_POINTS:
        return _on_sample(x, SPECTRAL_POINTS, seed, lambda s: _spectral(s, n_clusters, seed))
    return _spectral_splits(x, [n_clusters], seed)[n_clusters]


def _spectral_splits(x: np.ndarray, counts: Iterable[int], seed: int) -> dict[int, np.ndarray]:
    """`_spectral` into each of `counts` (each from 2 to len(x) - 1), the Laplacians decomposed once for all."""
    from sklearn.cluster import KMeans

    n = len(x)
    if n > SPECTRAL_POINTS:
        return {k: _spectral(x, k, seed) for k in counts}
    order = np.argsort(-(x @ x.T), axis=1)
    best = {}
    for p in PRUNING:
        links = np.zeros((n, n))
        np.put_along_axis(links, order[:, : max(2, int(round(p * n)))], 1.0, axis=1)
        affinity = (links + links.T) / 2
        values, vectors = np.linalg.eigh(np.diag(affinity.sum(axis=1)) - affinity)
        for k in counts:
            score = p / max((values[k] - values[k - 1]) / values[-1], 1e-10)
            if k not in best or score < best[k][0]:
                best[k] = (score, vectors[:, :k])
    return {k: _relabel(KMeans(k, n_init=10, random_state=seed).fit_predict(best[k][1])) for k in counts}


def _hdbscan(x: np.ndarray, calibration: Calibration, size: int, seed: int) -> np.ndarray:
    import hdbscan

    n = len(x)
    # density estimates are poor in 256 dimensions: project on the leading principal axes first
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ vt[: min(16, n - 1, vt.shape[0])].T
    # HDBSCAN's own single-cluster option swallowed whole conversations (2 of 8 became one speaker);
    # asking it for a split and judging the split by its silhouette tells one voice from several
    labels = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=1, cluster_selection_method="eom",
                             allow_single_cluster=False).fit_predict(reduced)
    if (labels < 0).all():
        return np.zeros(n, dtype=int)
    labels = assign_to_nearest(x, labels, min_size=size)
    labels = _merge_closest(x, labels, _unclear(x, calibration))
    if labels.max() > 0:
        labels = _split_clear(x, labels, size, calibration.min_silhouette, seed)
    # a clear split can still cut one voice into its phrases (a recording that repeats itself does)
    return _merge_closest(x, labels, lambda _, similarity: similarity >= calibration.same_voice)


def _merge_closest(x: np.ndarray, labels: np.ndarray, merge: Callable[[np.ndarray, float], bool]) -> np.ndarray:
    """Merge the two speakers with the most similar centroids while merge(labels, their similarity)."""
    while labels.max() > 0:
        means = centroids(x, labels)
        similarity = means @ means.T
        np.fill_diagonal(similarity, -np.inf)
        a, b = np.unravel_index(similarity.argmax(), similarity.shape)
        if not merge(labels, similarity[a, b]):
            break
        labels = _relabel(np.where(labels == b, a, labels))
    return labels


def _split_clear(x: np.ndarray, labels: np.ndarray, min_size: int, min_silhouette: float, seed: int) -> np.ndarray:
    """The converse of merging, for voices HDBSCAN ran together: a speaker whose two halves (spectral)
    hold at least `min_size` segments each and separate with silhouette >= `min_silhouette` is two."""
    from sklearn.metrics import silhouette_score

    speaker = 0
    while speaker <= labels.max():
        members = np.flatnonzero(labels == speaker)
        if len(members) >= 2 * min_size:
            halves = _spectral(x[members], 2, seed)
            if (np.bincount(halves).min() >= min_size
                    and silhouette_score(x[members], halves, metric="cosine") >= min_silhouette):
                labels = labels.copy()
                labels[members[halves == 1]] = labels.max() + 1
                continue  # the half that kept the label may split again
        speaker += 1
    return _relabel(labels)


def _on_sample(x: np.ndarray, size: int, seed: int, cluster: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Cluster a seeded sample of `size` points; every other point joins the nearest centroid."""
    sample = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    labels = np.full(len(x), -1)
    labels[sample] = cluster(x[sample])
    return assign_to_nearest(x, labels)


def assign_to_nearest(x: np.ndarray, labels: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Give noise points (-1) and members of clusters under `min_size` the nearest kept centroid. When no
    cluster has `min_size` members, the smallest joins its nearest, and again, until one has (or one is left)."""
    labels = labels.copy()
    names, sizes = np.unique(labels[labels >= 0], return_counts=True)
    if len(names) > 1 and sizes.max() < min_size:
        sums = np.stack([x[labels == c].sum(axis=0) for c in names])  # kept up to date as groups join
        into = np.arange(len(names))  # the group each one has joined (itself while it stands)
        alive = np.ones(len(names), bool)
        while alive.sum() > 1 and sizes[alive].max() < min_size:
            small = np.flatnonzero(alive)[np.argmin(sizes[alive])]
            alive[small] = False
            others = np.flatnonzero(alive)
            target = others[np.argmax(normalise(sums[others]) @ sums[small])]
            sums[target] += sums[small]
            sizes[target] += sizes[small]
            into[into == small] = target
        labels = np.where(labels >= 0, names[into[np.searchsorted(names, labels.clip(min=names[0]))]], labels)
    kept = [c for c in np.unique(labels) if c >= 0 and (labels == c).sum() >= min_size]
    if not kept:
        kept = [c for c in np.unique(labels) if c >= 0]
    nearest = np.asarray(kept)[np.argmax(x @ centroids(x, labels, kept).T, axis=1)]
    return _relabel(np.where(np.isin(labels, kept), labels, nearest))


REFINE_ROUNDS = 5  # nearest-centroid passes after the count: one pass got suite DER 21.5%, five 21.3%


def with_outputs(x: np.ndarray, outputs: np.ndarray, weight: float) -> np.ndarray:
    """Recording-centred embeddings `x` beside the square roots of the encoder's output distributions, so
    that the cosine of two rows is (1 - weight) x the embeddings' cosine + weight x the distributions'
    Bhattacharyya coefficient. The outputs are what the KL loss compared in training; they separate the
    voices of one recording better than the embeddings alone (within-recording EER of 1.2 s pieces, clean
    / other corpora / rooms / real clips: 7.3 / 0.6 / 18.2 / 33.9% at 0.75 against 10.6 / 0.8 / 18.9 / 34.2%),
    but are not centred: a recording's voices share no offset there that centring would remove."""
    # float32 and in place: for hours of windows, float64 temporaries took hundreds of MB
    roots = outputs.astype(np.float32)
    np.clip(roots, 0, None, out=roots)
    roots /= np.maximum(roots.sum(axis=1, keepdims=True), 1e-12)
    np.sqrt(roots, out=roots)
    fused = np.empty((len(x), x.shape[1] + roots.shape[1]), np.float32)
    fused[:, : x.shape[1]] = normalise(x)
    fused[:, : x.shape[1]] *= np.sqrt(1 - weight)
    fused[:, x.shape[1]:] = np.sqrt(weight) * roots
    return fused


def pool_neighbours(x: np.ndarray, touching: np.ndarray, weight: float) -> np.ndarray:
    """Each row plus `weight` x each neighbour it touches (`touching[i]`: rows i and i + 1 are consecutive
    segments of one stretch of speech), normalised. A 1.2 s segment's embedding is noisy; a stretch of speech
    is mostly one speaker's. Told the count, the partition on pooled segments gets suite DER 22.9 -> 21.8%
    (further conversations 19.8 -> 18.8%); refining the estimated count's speakers on them, 21.2 -> 21.1%."""
    if weight == 0 or len(x) < 2:
        return x
    x = x.astype(np.float64)
    pooled = x.copy()
    pooled[:-1] += weight * x[1:] * touching[:, None]
    pooled[1:] += weight * x[:-1] * touching[:, None]
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def refine(x: np.ndarray, labels: np.ndarray, rounds: int = REFINE_ROUNDS) -> np.ndarray:
    """Each point to its nearest centroid, `rounds` times or until nothing moves; a pass that would leave a
    speaker without points is not taken (the count stays what it was found to be)."""
    for _ in range(rounds):
        moved = (x @ centroids(x, labels).T).argmax(axis=1)
        if (moved == labels).all() or len(np.unique(moved)) < labels.max() + 1:
            break
        labels = moved
    return labels


def centroids(x: np.ndarray, labels: np.ndarray, which=None) -> np.ndarray:
    """L2-normalised mean of each listed cluster (default: 0..max label), in order."""
    which = range(labels.max() + 1) if which is None else which
    means = np.stack([x[labels == c].mean(axis=0) for c in which])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number speakers 0..k-1 in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse]
