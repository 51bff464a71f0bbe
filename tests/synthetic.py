"""Synthetic speakers for training tests: a harmonic voice source through a formant filter.

Each speaker has a vocal tract (three formants scaled by its length, with their own bandwidths), a pitch
range and a voice quality (spectral tilt, breathiness). Each utterance is a run of vowel-like syllables:
the formants move to a random vowel target within the speaker's range, the pitch follows a jittered,
declining contour, the level follows a syllable envelope, and a noise floor at a random SNR lies under it.
Speakers overlap in every single cue, so telling them apart takes the whole spectral envelope.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import os
import numpy as np
import soundfile as sf

SR = 16000  # Hz
TOP = 5000.0  # Hz: highest harmonic synthesised
NEUTRAL = np.array([550.0, 1550.0, 2600.0])  # Hz: formants of a neutral vowel, average vocal tract
VOWEL_SPREAD = np.array([float(x) for x in os.environ.get("VS", "0.15,0.12,0.05").split(",")])  # fraction: how far a vowel moves each formant

CHANNEL_DB = float(os.environ.get('CHDB', 8))
JIT = float(os.environ.get('JIT', 0.1))
BWJ = float(os.environ.get('BWJ', 0.4))
F0LO, F0HI = (float(x) for x in os.environ.get("F0", "80,300").split(","))
CONTROL = 40  # samples (2.5 ms) between updates of the harmonic weights


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz: median pitch
    formants: tuple[float, float, float]  # Hz: neutral-vowel F1-F3 of this vocal tract
    bandwidths: tuple[float, float, float]  # Hz
    tilt: float  # dB per octave: source roll-off (voice quality)
    breath: float  # aspiration noise level relative to the voice


def random_voice(rng: np.random.Generator) -> Voice:
    tract = rng.uniform(0.78, 1.28)  # vocal-tract length factor: shorter tract, higher formants
    return Voice(f0=float(np.exp(rng.uniform(np.log(F0LO), np.log(F0HI)))),
                 formants=tuple(float(f) for f in NEUTRAL * tract * rng.uniform(1-JIT, 1+JIT, 3)),
                 bandwidths=tuple(float(b) for b in np.array([80, 110, 160]) * rng.uniform(1-BWJ, 1+BWJ, 3)),
                 tilt=float(rng.uniform(-15.0, -7.0)), breath=float(rng.uniform(0.0, 0.15)))


def _smooth_noise(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """Slowly varying noise in [-1, 1]: `knots` random values linearly interpolated over n samples."""
    return np.interp(np.arange(n), np.linspace(0, n - 1, knots), rng.uniform(-1, 1, knots))


def utterance(voice: Voice, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One utterance of `voice`: float32 mono at 16 kHz, peak about 0.3-0.7."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    # pitch: per-utterance register, declination, slow intonation and fast jitter
    f0 = (voice.f0 * rng.uniform(0.97, 1.03) * (1 - 0.08 * t / seconds)
          * (1 + 0.04 * _smooth_noise(rng, n, int(seconds * 4) + 2))
          * (1 + 0.01 * _smooth_noise(rng, n, int(seconds * 60) + 2)))
    # syllables: a vowel target and a level each, formants gliding between targets
    bounds = np.cumsum(rng.uniform(0.12, 0.28, int(seconds / 0.12) + 2))
    bounds = np.concatenate([[0.0], bounds[bounds < seconds - 0.05], [seconds]])
    centres = (bounds[:-1] + bounds[1:]) / 2
    targets = np.array(voice.formants) * (1 + VOWEL_SPREAD * rng.uniform(-1, 1, (len(centres), 3)))
    formants = np.stack([np.interp(t, centres, targets[:, i]) for i in range(3)])  # (3, n)
    syllable = np.searchsorted(bounds, t, side="right") - 1
    phase_in = (t - bounds[syllable]) / (bounds[syllable + 1] - bounds[syllable])
    envelope = np.sin(np.pi * phase_in) ** 0.6 * rng.uniform(0.4, 1.0, len(centres))[syllable]
    # voice: harmonics of f0, each weighted by the source tilt and the all-pole formant response; the
    # weights are computed every CONTROL samples and interpolated (they change far slower than the wave)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tilt = rng.uniform(-1.0, 1.0)  # dB per octave: this utterance's effort
    h = np.arange(1, int(TOP / f0.min()) + 1)[:, None]  # (H, 1)
    ctl = np.arange(0, n + CONTROL, CONTROL).clip(max=n - 1)
    fh = h * f0[ctl]  # (H, m)
    fm, bw = formants[:, None, ctl], np.array(voice.bandwidths)[:, None, None]  # (3, 1, m), (3, 1, 1)
    tract = np.prod(fm ** 2 / np.sqrt((fm ** 2 - fh ** 2) ** 2 + (bw * fh) ** 2), axis=0)
    weight = np.where(fh < TOP, 10 ** ((voice.tilt + tilt) * np.log2(h) / 20) * tract, 0.0)  # (H, m)
    pos = np.arange(n) / CONTROL
    i, frac = pos.astype(int), (pos % 1)[None].astype(np.float32)
    weight = weight.astype(np.float32)
    amp = weight[:, i] * (1 - frac) + weight[:, i + 1] * frac  # (H, n)
    offsets = rng.uniform(0, 2 * np.pi, (len(h), 1))
    wave = (amp * np.sin(h * phase[None] + offsets).astype(np.float32)).sum(axis=0).astype(np.float64)
    wave *= envelope
    wave /= np.abs(wave).max() + 1e-9
    # breath rides on the voice; a noise floor at 20-35 dB SNR lies under everything
    wave += voice.breath * envelope * rng.standard_normal(n)
    wave += np.sqrt(np.mean(wave ** 2)) * 10 ** (-rng.uniform(20, 35) / 20) * rng.standard_normal(n)
    wave = _channel(wave, rng)
    return (wave / np.abs(wave).max() * rng.uniform(0.3, 0.7)).astype(np.float32)


def _channel(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A recording channel: a smooth random EQ, CHANNEL_DB at most, over a log-frequency axis."""
    f = np.fft.rfftfreq(len(wave), 1 / SR)
    octave = np.log2(np.maximum(f, 50.0) / 50.0)
    knots = np.linspace(0, octave.max(), 6)
    gain_db = np.interp(octave, knots, rng.uniform(-CHANNEL_DB, CHANNEL_DB, len(knots)))
    return np.fft.irfft(np.fft.rfft(wave) * 10 ** (gain_db / 20), len(wave))


def write_speakers(root: str | Path, n_speakers: int, n_utterances: int, seed: int,
                   seconds: tuple[float, float] = (1.0, 2.0), prefix: str = "spk") -> Path:
    """Write `n_speakers` x `n_utterances` wav files as root/<speaker>/<session>/<utt>.wav (VoxCeleb
    layout); utterance lengths uniform in `seconds`. Returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for s in range(n_speakers):
        voice = random_voice(rng)
        for u in range(n_utterances):
            path = root / f"{prefix}{s:02d}" / f"session{u % 2}" / f"utt{u:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, utterance(voice, rng.uniform(*seconds), rng), SR)
    return root
