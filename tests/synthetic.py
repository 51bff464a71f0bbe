"""Synthetic speakers for the training tests: a harmonic voice source through a formant filter, recorded
through a random channel.

A speaker is a pitch, a vocal tract (three formants scaled by its length, each nudged on its own, with
their own bandwidths) and a voice quality (spectral tilt, breathiness). An utterance is a run of
vowel-like syllables: the formants glide to a random vowel target around the speaker's own, the pitch
follows a jittered, declining contour in this utterance's register, the level follows a syllable envelope;
then a noise floor at 20-35 dB SNR and a recording channel (a smooth random EQ of up to +-9 dB) colour it.
No single cue names a speaker: the channel and the vowels move the spectral envelope about as much as
the vocal tract does, so averaging spectra (or an untrained encoder) tells speakers apart poorly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000  # Hz
F0_RANGE = (80.0, 300.0)  # Hz: speakers' median pitch, log-uniform
TRACT_RANGE = (0.78, 1.28)  # vocal-tract length factor (1/length): formants scale with it
NEUTRAL = np.array([550.0, 1550.0, 2600.0])  # Hz: F1-F3 of a neutral vowel, average vocal tract
BANDWIDTHS = np.array([80.0, 110.0, 160.0])  # Hz: average F1-F3 bandwidths
VOWEL_SPREAD = np.array([0.15, 0.12, 0.05])  # fraction: how far a vowel moves each formant
CHANNEL_DB = 9.0  # dB: largest boost or cut of a recording channel's EQ
TOP = 5000.0  # Hz: highest harmonic synthesised
CONTROL = 40  # samples (2.5 ms) between updates of the harmonic amplitudes


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz: median pitch
    formants: tuple[float, float, float]  # Hz: F1-F3 of this vocal tract's neutral vowel
    bandwidths: tuple[float, float, float]  # Hz
    tilt: float  # dB per octave: source roll-off (voice quality)
    breath: float  # aspiration noise relative to the voice's peak


def random_voice(rng: np.random.Generator) -> Voice:
    formants = NEUTRAL * rng.uniform(*TRACT_RANGE) * rng.uniform(0.9, 1.1, 3)
    return Voice(f0=float(np.exp(rng.uniform(*np.log(F0_RANGE)))),
                 formants=tuple(float(f) for f in formants),
                 bandwidths=tuple(float(b) for b in BANDWIDTHS * rng.uniform(0.6, 1.4, 3)),
                 tilt=float(rng.uniform(-15.0, -7.0)), breath=float(rng.uniform(0.0, 0.15)))


def spread_voices(n: int, rng: np.random.Generator) -> list[Voice]:
    """`n` random voices whose pitches are spread over the range (log-spaced, +-3%), as a small test set
    of distinct people would be; all else is drawn as in random_voice."""
    f0s = np.geomspace(F0_RANGE[0] * 1.06, F0_RANGE[1] * 0.94, n) * rng.uniform(0.97, 1.03, n)
    return [dataclasses.replace(random_voice(rng), f0=float(f0)) for f0 in f0s]


def _smooth_noise(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """Slowly varying noise in [-1, 1]: `knots` random values linearly interpolated over n samples."""
    return np.interp(np.arange(n), np.linspace(0, n - 1, knots), rng.uniform(-1, 1, knots))


def utterance(voice: Voice, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One utterance of `voice`: float32 mono at 16 kHz, peak 0.3-0.7."""
    n = int(seconds * SR) // CONTROL * CONTROL
    t = np.arange(n) / SR
    # pitch: this utterance's register, declination, slow intonation and fast jitter
    f0 = (voice.f0 * rng.uniform(0.97, 1.03) * (1 - 0.08 * t / seconds)
          * (1 + 0.04 * _smooth_noise(rng, n, int(seconds * 4) + 2))
          * (1 + 0.01 * _smooth_noise(rng, n, int(seconds * 60) + 2)))
    # syllables: a vowel target and a level each; the formants glide between targets
    bounds = np.cumsum(rng.uniform(0.12, 0.28, int(seconds / 0.12) + 2))
    bounds = np.concatenate([[0.0], bounds[bounds < seconds - 0.05], [seconds]])
    centres = (bounds[:-1] + bounds[1:]) / 2
    targets = np.array(voice.formants) * (1 + VOWEL_SPREAD * rng.uniform(-1, 1, (len(centres), 3)))
    syllable = np.searchsorted(bounds, t, side="right") - 1
    phase_in = (t - bounds[syllable]) / (bounds[syllable + 1] - bounds[syllable])
    envelope = np.sin(np.pi * phase_in) ** 0.6 * rng.uniform(0.4, 1.0, len(centres))[syllable]

    # harmonic amplitudes (source tilt x all-pole formant response), every CONTROL samples
    ctl = np.arange(0, n + 1, CONTROL).clip(max=n - 1)  # m + 1 control points for m blocks
    h = np.arange(1, int(TOP / f0.min()) + 1)[:, None]  # (H, 1)
    fh = h * f0[ctl]  # (H, m + 1)
    fm = np.stack([np.interp(t[ctl], centres, targets[:, i]) for i in range(3)])[:, None]  # (3, 1, m + 1)
    bw = np.array(voice.bandwidths)[:, None, None]
    tract = np.prod(fm ** 2 / np.sqrt((fm ** 2 - fh ** 2) ** 2 + (bw * fh) ** 2), axis=0)
    tilt = voice.tilt + rng.uniform(-1.0, 1.0)  # dB per octave: this utterance's vocal effort
    amp = np.where(fh < TOP, 10 ** (tilt * np.log2(h) / 20) * tract, 0.0).astype(np.float32)
    # the harmonics themselves, in float32 on a wrapped phase (fast), amplitudes linear within a block
    phase = (2 * np.pi * np.cumsum(f0) / SR % (2 * np.pi)).astype(np.float32)
    offsets = rng.uniform(0, 2 * np.pi, (len(h), 1)).astype(np.float32)
    waves = np.sin(h.astype(np.float32) * phase[None] + offsets).reshape(len(h), -1, CONTROL)
    ramp = np.arange(CONTROL, dtype=np.float32) / CONTROL
    a0, a1 = amp[:, :-1, None], amp[:, 1:, None]
    wave = (waves * (a0 + (a1 - a0) * ramp)).sum(axis=0).reshape(-1).astype(np.float64) * envelope
    wave /= np.abs(wave).max() + 1e-9

    # breath rides on the voice; a noise floor lies under everything; then the recording channel
    wave += voice.breath * envelope * rng.standard_normal(n)
    wave += np.sqrt(np.mean(wave ** 2)) * 10 ** (-rng.uniform(20, 35) / 20) * rng.standard_normal(n)
    wave = _channel(wave, rng)
    return (wave / np.abs(wave).max() * rng.uniform(0.3, 0.7)).astype(np.float32)


def _channel(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A recording channel: a smooth random EQ, up to CHANNEL_DB, over a log-frequency axis."""
    f = np.fft.rfftfreq(len(wave), 1 / SR)
    octaves = np.log2(np.maximum(f, 50.0) / 50.0)
    knots = np.linspace(0, octaves.max(), 6)
    gain_db = np.interp(octaves, knots, rng.uniform(-CHANNEL_DB, CHANNEL_DB, len(knots)))
    return np.fft.irfft(np.fft.rfft(wave) * 10 ** (gain_db / 20), len(wave))


def write_speakers(root: str | Path, voices: list[Voice], n_utterances: int, rng: np.random.Generator,
                   seconds: tuple[float, float] = (1.0, 2.0), prefix: str = "spk") -> list[str]:
    """Write `n_utterances` wav files per voice as root/<prefix>NNN/<session>/<utt>.wav (VoxCeleb layout),
    lengths uniform in `seconds`. Returns the speaker names, in order."""
    names = []
    for s, voice in enumerate(voices):
        names.append(f"{prefix}{s:03d}")
        for u in range(n_utterances):
            path = Path(root) / names[-1] / f"session{u % 2}" / f"utt{u:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, utterance(voice, rng.uniform(*seconds), rng), SR)
    return names
