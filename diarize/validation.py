"""Held-out sets an encoder is measured on: clean speakers, other corpora, the same speakers in rooms and
noise, and pairs of voices inside real recordings. Training keeps the checkpoint best on their mean EER."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AUDIO_SUFFIXES, load_audio, log_mel
from .calibration import normalise
from .data import Dataset, FeatureCache, build_cache, utterance_windows
from .metrics import UnscorableSet, equal_error_rate, pair_scores
from .writers import read_rttm

PIECE_SECONDS = 1.2  # single-speaker pieces of a recording, as the pipeline's segments
ROOMS_SEED = 7919  # the rendering of a set in rooms is fixed: every run and checkpoint is measured on the same


@dataclass
class HeldOut:
    """Utterances (each a stack of 40-frame windows) and their speakers; with `recordings`, only pairs of
    one recording are scored (can two voices of one room be told apart?)."""
    name: str
    utts: list[np.ndarray]
    speakers: list[str]
    recordings: list[str] | None = None


def _chosen(cache: FeatureCache, per_speaker: int, seed: int = 0, max_speakers: int | None = None) -> list[int]:
    """Up to `per_speaker` files per speaker (of at most `max_speakers`, drawn), speaker by speaker."""
    rng = np.random.default_rng(seed)
    speakers = sorted(set(cache.speakers))
    if max_speakers is not None and len(speakers) > max_speakers:
        speakers = sorted(rng.choice(speakers, size=max_speakers, replace=False))
    out = []
    for spk in speakers:
        idx = [i for i, s in enumerate(cache.speakers) if s == spk]
        out += sorted(rng.permutation(idx)[:per_speaker])
    return out


def speaker_set(name: str, cache: FeatureCache, per_speaker: int, seed: int = 0,
                max_speakers: int | None = None) -> HeldOut:
    """Up to `per_speaker` utterances per speaker (of at most `max_speakers`, drawn), as stacks of windows."""
    files = _chosen(cache, per_speaker, seed, max_speakers)
    utts = []
    for i in files:
        rows = np.asarray(cache.frames[cache.offsets[i]: cache.offsets[i] + cache.lengths[i]])
        if rows.dtype == np.int16:  # a cache of samples (augmented training): their log-mels
            rows = log_mel(rows.astype(np.float32) / 32768).numpy()
        utts.append(utterance_windows(rows))
    return HeldOut(name, utts, [cache.speakers[i] for i in files])


def rooms_set(name: str, data: Dataset, cache_dir: Path, per_speaker: int, noise_dirs: list[Path] = (),
              workers: int = 1, hook=None) -> HeldOut:
    """The utterances speaker_set takes, each heard in a simulated room under noise at 0-20 dB SNR
    (recorded noises of `noise_dirs`, coloured noise), rendered once with a fixed seed."""
    from .augment import Acoustics

    acoustics = Acoustics((), noise_dirs, rooms=16, seed=ROOMS_SEED)
    waves = build_cache(data, cache_dir, workers, hook, kind="wave")
    rng = np.random.default_rng(ROOMS_SEED)
    files = _chosen(waves, per_speaker)
    utts = []
    for i in files:
        wave = np.asarray(waves.frames[waves.offsets[i]: waves.offsets[i] + waves.lengths[i]], np.float32) / 32768
        utts.append(utterance_windows(log_mel(acoustics.render(wave, rng)).numpy()))
    return HeldOut(name, utts, [waves.speakers[i] for i in files])


def clips_set(name: str, folder: Path) -> HeldOut:
    """1.2 s pieces where exactly one reference speaker talks, cut from each recording of `folder` that has
    a same-stem RTTM; pairs are scored inside each recording."""
    utts, spks, recs = [], [], []
    for rttm in sorted(Path(folder).glob("*.rttm")):
        audio = next((rttm.with_suffix(s) for s in sorted(AUDIO_SUFFIXES) if rttm.with_suffix(s).exists()), None)
        if audio is None:
            continue
        wave = load_audio(audio)
        frames = len(wave) // 160
        turns = [t for file_turns in read_rttm(rttm).values() for t in file_turns]
        names = sorted({t.speaker for t in turns})
        active = np.zeros((len(names), frames), bool)
        for t in turns:
            active[names.index(t.speaker), int(t.start * 100): int(t.end * 100)] = True
        single, who = active.sum(axis=0) == 1, active.argmax(axis=0)
        step, t = int(PIECE_SECONDS * 100), 0
        while t < frames:
            end = t
            while end < frames and single[end] and who[end] == who[t]:
                end += 1
            if single[t]:
                for k in range(t, end - step + 1, step):
                    utts.append(utterance_windows(log_mel(wave[k * 160: (k + step) * 160]).numpy()))
                    spks.append(names[who[t]])
                    recs.append(rttm.stem)
            t = max(end, t + 1)
    if len(set(zip(recs, spks))) == len(set(recs)):  # one speaker in every recording: no pair to score
        raise ValueError(f"{folder}: no recording with two speakers' single-speaker pieces (audio + RTTM)")
    return HeldOut(name, utts, spks, recs)


@torch.inference_mode()
def window_embeddings(encoder, utts: list[np.ndarray], device: torch.device, batch_size: int = 512) -> list[np.ndarray]:
    """The embedding of every window of each utterance: one (windows, D) array per utterance."""
    was_training = encoder.training
    encoder.eval()
    flat = torch.from_numpy(np.concatenate(utts))
    emb = torch.cat([encoder.embed(flat[i: i + batch_size].to(device)).cpu()
                     for i in range(0, len(flat), batch_size)]).numpy()
    encoder.train(was_training)
    return np.split(emb, np.cumsum([len(u) for u in utts])[:-1])


def utterance_embeddings(encoder, utts: list[np.ndarray], device: torch.device) -> np.ndarray:
    """Mean of each utterance's window embeddings, L2-normalised."""
    return _means(window_embeddings(encoder, utts, device))


def _means(windows: list[np.ndarray]) -> np.ndarray:
    return normalise(np.stack([w.sum(axis=0) for w in windows]))


def _embedded(encoder, held: HeldOut, device: torch.device, memo: dict | None) -> list[np.ndarray]:
    """window_embeddings of a set, computed once per `memo` (one validation round: an encoder's weights)."""
    if memo is None:
        return window_embeddings(encoder, held.utts, device)
    if id(held) not in memo:
        memo[id(held)] = window_embeddings(encoder, held.utts, device)
    return memo[id(held)]


def calibrate_encoder(encoder, held: HeldOut, device: torch.device, memo: dict | None = None):
    """The encoder's speaker-count calibration (calibration.calibrate) from a held-out set's windows; with
    the `memo` of evaluate_sets, the windows embedded there are reused."""
    from .calibration import calibrate, piece_embeddings

    return calibrate(piece_embeddings(_embedded(encoder, held, device, memo)), held.speakers)


def set_eer(encoder, held: HeldOut, device: torch.device, memo: dict | None = None) -> dict[str, float]:
    """EER (cosine, all pairs, or pairs inside each recording) and balanced pair accuracy at its threshold."""
    emb = _means(_embedded(encoder, held, device, memo))
    if held.recordings is None:
        scores, same = pair_scores(emb, held.speakers)
    else:
        recs, spks = np.array(held.recordings), np.array(held.speakers)
        parts = [pair_scores(emb[recs == r], spks[recs == r]) for r in sorted(set(held.recordings))
                 if len(set(spks[recs == r])) > 1]
        scores, same = (np.concatenate(p) for p in zip(*parts))
    try:
        eer, threshold = equal_error_rate(scores, same)
    except UnscorableSet as e:
        raise UnscorableSet(f"validation set {held.name}: {e}", held.name) from None
    accept = scores >= threshold
    return {"eer": eer, "pair_accuracy": float(0.5 * (accept[same].mean() + (~accept[~same]).mean())),
            "threshold": threshold, "utterances": len(held.utts), "speakers": len(set(held.speakers)),
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}


def evaluate_sets(encoder, sets: list[HeldOut], device: torch.device, memo: dict | None = None) -> dict[str, float]:
    """The first set's figures (`eer` among them), each set's EER as eer_<name>, and eer_mean: the mean over
    the sets (what checkpoints are chosen by). A `memo` (an empty dict) keeps the window embeddings for
    calibrate_encoder."""
    figures = {held.name: set_eer(encoder, held, device, memo) for held in sets}
    out = dict(figures[sets[0].name])
    out.update({f"eer_{name}": f["eer"] for name, f in figures.items()})
    out["eer_mean"] = float(np.mean([f["eer"] for f in figures.values()]))
    return out
