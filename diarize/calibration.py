"""What the speaker-count estimate needs to know about an encoder's similarity scale, measured on held-out
speakers and stored with the model: every encoder (and every retrained one) has a scale of its own.

The measurement mirrors the pipeline: 1.2 s pieces of held-out utterances (the mean of their window
embeddings) are put together into seeded "recordings" of 1-5 speakers, centred on the recording's mean and
normalised as `pipeline.diarize_windows` does; the similarities that decide merges and splits are read there.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

PIECE_WINDOWS = 6  # windows (0.4 s at a 0.2 s hop) in one piece: 1.2 s, the pipeline's segment
RECORDINGS = 300  # seeded pseudo-recordings the figures are read from
MAX_SPEAKERS = 5  # speakers in one pseudo-recording: 1 to this many
# Read on 10 of the bundled model's 63 held-out speakers (three draws), the calibration moved the suite's
# DER by up to 1.2 points; on 20, by up to 0.3; on 40, not at all: fewer than this are worth a word
FEW_SPEAKERS = 20
MAX_PIECES = 12  # pieces of one speaker among others (drawn 3 to this many: unbalanced speakers)
MIN_PIECES = 4  # a voice is calibrated on when it has this many pieces: two halves of two. Validation takes at
# most 16 windows of an utterance, so one gives 2 pieces at most: 4 utterances, or 2 of 2.6 s or more
VOICE_NEEDS = "4 utterances, or 2 of 2.6 s or more"  # ...said so in messages
ONE_VOICE_DRAWS = 10  # one-voice recordings per held-out speaker: all its pieces, then random subsets of at
# least half of them. Read on one recording of every fifth pseudo-recording's speaker (60 in all), the 90th
# percentile moved by up to 0.04 between encoders of one family (0.270-0.331), enough to decide a one-speaker
# recording or a room conversation
ONE_VOICE_RECORDINGS = 640  # fewer draws per speaker when there are more speakers: time stays bounded


@dataclass(frozen=True)
class Calibration:
    """Thresholds on the recording-centred cosine scale of one encoder (see `calibrate`)."""
    merge_similarity: float  # speaker centroids at least this similar are one speaker: where the same- and
    # different-speaker centroid similarities cross (equal error)
    same_voice: float  # centroids this similar are one voice beyond doubt: 99th percentile of different speakers
    min_silhouette: float  # a split less clear than this is one voice cut in two: 90th percentile of the
    # silhouette of the best split of a one-speaker recording (one_voice_silhouettes; the 95th held room
    # conversations to fewer speakers: development suite mean DER 25.2% against 23.8%, bundled encoder)
    split_silhouettes: tuple[float, ...] = ()  # the same for splits of one voice into 3, 4, ... MAX_SPEAKERS:
    # lower, as the best of more parts of one voice separate less; () where not measured (min_silhouette then)
    speakers: int = 0  # held-out speakers it was measured on
    centroid_eer: float = 0.0  # same/different-speaker error at merge_similarity
    adjacent_similarity: float = 0.0  # median similarity of consecutive pieces of one utterance in recordings
    # of 2-5 speakers: the scale a recording's own consecutive segments are compared with (for_recording);
    # 0: not measured

    def min_silhouette_for(self, k: int) -> float:
        """The silhouette the best split of one voice into k speakers reaches (k >= 2; beyond the counts
        measured, the last: one voice's splits grow less clear with more parts)."""
        values = (self.min_silhouette, *self.split_silhouettes)
        return values[min(k - 2, len(values) - 1)]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        fields["split_silhouettes"] = tuple(fields.get("split_silhouettes", ()))
        return cls(**fields)


ADAPT_SEGMENTS = 30  # segments (36 s of speech) from which a recording's own spread is read: the median of
# fewer pairs is too unsteady (from 20 on, 1-speaker real clips of 30 s were cut in up to 7)
ADAPT_SHARE = 0.5  # merge_similarity moves by this share of the difference: development suite DER 8.8 / 17.1 /
# 33.6 / 38.0% against 10.9 / 18.3 / 37.8 / 38.0% unmoved; 0.75: 8.8 / 16.3 / 34.8 / 38.0%, 1.0: 37.5% on dev_room


def for_recording(calibration: Calibration, x: np.ndarray) -> Calibration:
    """The calibration moved to one recording: its recording-centred segments `x`, in time order.
    Consecutive segments are mostly one voice talking on; after centring, their similarity is lower where
    the recording's voices lie closer together than the calibration's held-out speakers did (a shared
    room, noise and channel: medians 0.16-0.57 in the development rooms, 0.63-0.72 in clean conversations).
    merge_similarity follows by ADAPT_SHARE of the difference, so that such voices are not merged into one.
    The one-voice test (min_silhouette) stays: one voice alone, centred on itself, looks the same, and a
    silhouette moved with it cut clean one-speaker recordings in 2-4 (suite mean DER 22.5% then, 24.4% so)."""
    # 0 or NaN: not measured (NaN in models calibrated on utterances of one piece each, before 0 said so)
    if not np.isfinite(calibration.adjacent_similarity) or not calibration.adjacent_similarity \
            or len(x) < ADAPT_SEGMENTS:
        return calibration
    observed = float(np.median(np.sum(x[1:] * x[:-1], axis=1)))
    shift = ADAPT_SHARE * (observed - calibration.adjacent_similarity)
    return dataclasses.replace(calibration, merge_similarity=calibration.merge_similarity + shift)


def piece_embeddings(window_embeddings: list[np.ndarray]) -> list[np.ndarray]:
    """Each utterance's window embeddings (windows 0.2 s apart) -> L2-normalised means of consecutive runs of
    PIECE_WINDOWS windows (an utterance shorter than that gives one piece of all its windows)."""
    out = []
    for w in window_embeddings:
        n = pieces_in(len(w))
        whole = w[: n * PIECE_WINDOWS] if len(w) >= PIECE_WINDOWS else w
        out.append(normalise(np.stack([part.mean(axis=0) for part in np.array_split(whole, n)])))
    return out


def pieces_in(windows: int) -> int:
    """The pieces `piece_embeddings` cuts from an utterance of this many windows."""
    return max(1, windows // PIECE_WINDOWS)


def voices_to_calibrate(window_counts: list[int], speakers: list[str]) -> int:
    """How many speakers `calibrate` would read, from the windows of each utterance (`piece_embeddings` cuts
    them): known before any embedding, so that a set too short to calibrate on is found before training."""
    pieces: dict[str, int] = {}
    for n, s in zip(window_counts, speakers):
        pieces[s] = pieces.get(s, 0) + pieces_in(n)
    return sum(p >= MIN_PIECES for p in pieces.values())


def calibrate(pieces: list[np.ndarray], speakers: list[str], seed: int = 0) -> Calibration:
    """Calibration from the pieces of held-out utterances (`piece_embeddings`) and their speakers."""
    from .cluster import centroids
    from .metrics import equal_error_rate

    by_speaker: dict[str, list[np.ndarray]] = {}
    for p, s in zip(pieces, speakers):
        by_speaker.setdefault(s, []).append(p)
    pool = {s: np.concatenate(v) for s, v in by_speaker.items()}
    pool = {s: v for s, v in pool.items() if len(v) >= MIN_PIECES}
    # which utterance each pooled piece comes from: consecutive pieces of one utterance are one voice
    # talking on, as consecutive segments of a recording mostly are
    utterance = {s: np.repeat(np.arange(len(v)), [len(p) for p in v]) for s, v in by_speaker.items() if s in pool}
    names = sorted(pool)
    if len(names) < MAX_SPEAKERS:
        raise ValueError(f"calibration needs at least {MAX_SPEAKERS} held-out speakers with {MIN_PIECES} pieces "
                         f"of speech each ({VOICE_NEEDS}); found {len(names)}")
    rng = np.random.default_rng(seed)
    same, different, adjacent = [], [], []
    for r in range(RECORDINGS):
        k = 1 + r % MAX_SPEAKERS
        chosen = rng.choice(len(names), size=k, replace=False)
        parts, utts = [], []
        for c in chosen:
            v = pool[names[c]]
            # one voice alone: all its pieces, as a recording of one speaker has many segments
            take = len(v) if k == 1 else min(len(v), int(rng.integers(3, MAX_PIECES + 1)))
            picked = np.sort(rng.choice(len(v), size=take, replace=False))  # in utterance order
            parts.append(v[picked])
            utts.append(utterance[names[c]][picked] + 1000 * len(utts))
        x = np.concatenate(parts)
        labels = np.repeat(np.arange(k), [len(p) for p in parts])
        if k == 1:  # (drawn to keep the seeded draws of the others; one voice is read below)
            continue
        x = normalise(x - x.mean(axis=0))  # as the pipeline centres each recording
        # (in a recording of one voice, centring removes the voice itself: the scale is read on conversations)
        u = np.concatenate(utts)
        talking_on = np.flatnonzero(u[1:] == u[:-1])
        adjacent.extend(np.sum(x[talking_on] * x[talking_on + 1], axis=1))
        means = centroids(x, labels)
        sim = means @ means.T
        different.extend(sim[np.triu_indices(k, 1)])
        for c in range(k):  # two random halves of one speaker: what a split of one voice looks like
            members = rng.permutation(np.flatnonzero(labels == c))
            if len(members) >= 2:
                a, b = centroids(x[members], (np.arange(len(members)) >= len(members) // 2).astype(int))
                same.append(float(a @ b))
    scores = np.array(same + different)
    eer, threshold = equal_error_rate(scores, np.arange(len(scores)) < len(same))
    one_voice = one_voice_silhouettes([pool[s] for s in names], seed)
    # (voices of few pieces split into fewer parts: counts none of them reaches are left out)
    thresholds = [float(np.percentile(one_voice[k], 90)) for k in sorted(one_voice) if one_voice[k]]
    return Calibration(merge_similarity=float(threshold), same_voice=float(np.percentile(different, 99)),
                       min_silhouette=thresholds[0], split_silhouettes=tuple(thresholds[1:]), speakers=len(names),
                       centroid_eer=float(eer),
                       # utterances of one piece each (clips of 1-2 s) have no consecutive pieces: not measured
                       adjacent_similarity=float(np.median(adjacent)) if adjacent else 0.0)


def one_voice_silhouettes(voices: list[np.ndarray], seed: int = 0) -> dict[int, list[float]]:
    """Silhouettes of the best splits into 2 to MAX_SPEAKERS parts (spectral) of one-speaker recordings made of
    each voice's pieces: all of them, then random subsets of at least half (ONE_VOICE_DRAWS in all, fewer when
    there are more than ONE_VOICE_RECORDINGS / ONE_VOICE_DRAWS voices), each centred and normalised as the
    pipeline does a recording. {parts: silhouettes}."""
    from sklearn.metrics import silhouette_score

    from .cluster import _spectral_splits

    rng = np.random.default_rng(seed)
    draws = max(1, min(ONE_VOICE_DRAWS, ONE_VOICE_RECORDINGS // max(len(voices), 1)))
    out = {k: [] for k in range(2, MAX_SPEAKERS + 1)}
    for v in voices:
        for draw in range(draws):
            take = len(v) if draw == 0 else int(rng.integers(max(4, len(v) // 2), len(v) + 1))
            x = v[np.sort(rng.choice(len(v), size=take, replace=False))]  # in utterance order
            x = normalise(x - x.mean(axis=0))
            for k, parts in _spectral_splits(x, range(2, min(MAX_SPEAKERS, len(x) - 1) + 1), seed).items():
                if len(set(parts)) > 1:
                    out[k].append(float(silhouette_score(x, parts, metric="cosine")))
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
