"""Waveform augmentation for training: rooms, noise, band limits, equalisation and gain.

Each batch of S speakers x M windows is split among a few acoustic conditions (a room, a noise, a band
limit, an equaliser, a gain), laid out so that every condition holds many speakers and every speaker
appears under several: the pairwise loss cannot tell speakers apart by their room or channel. Rooms and
noise act on the waveform; band limits and equalisation are gains per frequency, applied to the mel power
they produce (exact for curves smooth across a mel band, and cheaper).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, audio_files_in, load_audio, log_mel
from .hparams import FMAX, FMIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WINDOW_FRAMES

PRE_ROLL = 3200  # samples (0.2 s) read before each window: what the room still rings with
WINDOW_SAMPLES = (WINDOW_FRAMES - 1) * HOP_LENGTH + N_FFT  # 6,640 samples make 40 uncentred frames
SPAN = PRE_ROLL + WINDOW_SAMPLES  # samples a training window is read over
MAX_IR = SAMPLE_RATE  # impulse responses cut to 1 s: the tail beyond is below the noise


def _audio_files(dirs: list[Path]) -> list[Path]:
    files = [f for d in dirs for f in audio_files_in(d)]
    if dirs and not files:
        raise ValueError(f"no audio files in {', '.join(map(str, dirs))}")
    return files


@functools.lru_cache(maxsize=4)
def simulated_rooms(n: int, positions: int, seed: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """`n` shoebox rooms (pyroomacoustics' image method, RT60 0.15-0.8 s), each with `positions` talkers at
    positions of their own and one microphone: the impulse responses of each room. The same arguments
    give the same rooms, simulated once per process."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rooms = []
    for _ in range(n):
        size = rng.uniform([3, 3, 2.4], [10, 8, 3.5])
        rt60 = rng.uniform(0.15, 0.8)
        try:
            absorption, order = pra.inverse_sabine(rt60, size)
        except ValueError:  # the room cannot ring that long: take a livelier one
            absorption, order = 0.1, 30
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, 30))
        room.add_microphone(rng.uniform(0.5, size - 0.5))
        for _ in range(positions):
            room.add_source(rng.uniform(0.5, size - 0.5))
        room.compute_rir()
        rooms.append(tuple(_unit(np.asarray(room.rir[0][k], dtype=np.float32)) for k in range(positions)))
    return tuple(rooms)


def _unit(ir: np.ndarray) -> np.ndarray:
    """An impulse response cut to MAX_IR, from just before its direct path, with unit energy."""
    ir = ir[max(0, int(np.argmax(np.abs(ir))) - 40):][:MAX_IR]
    return ir / max(float(np.sqrt(np.sum(ir ** 2))), 1e-9)


def _coloured_noise(n: int, samples: int, exponent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, samples) noise with power falling as 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal((n, samples)), axis=1)
    f = np.maximum(np.fft.rfftfreq(samples, 1 / SAMPLE_RATE), 20.0)
    return np.fft.irfft(spec * f[None, :] ** (-exponent[:, None] / 2), n=samples, axis=1)


class Acoustics:
    """Rooms and noises to put training speech in, and the conditions of one batch.

    Rooms: `rooms` simulated ones (4 talker positions each) and one per impulse-response file of
    `rir_dirs`. Noises: the recordings of `noise_dirs`, coloured noise, and babble (other windows of the
    batch); at `snr` dB (a range) below the speech. A condition is clean with probability `p_clean`. A share
    `p_edge` of the windows are cut at an utterance's edge (see `batch`).
    """

    def __init__(self, rir_dirs: list[Path] = (), noise_dirs: list[Path] = (), rooms: int = 64,
                 seed: int = 0, snr: tuple[float, float] = (0.0, 20.0), p_clean: float = 0.15,
                 p_edge: float = 0.0):
        self.rooms = list(simulated_rooms(rooms, 4, seed)) if rooms else []
        self.rooms += [(_unit(load_audio(f)),) for f in _audio_files(list(rir_dirs))]
        self.noises = [w for w in (load_audio(f) for f in _audio_files(list(noise_dirs))) if len(w) >= N_FFT]
        self.snr, self.p_clean, self.p_edge = snr, p_clean, p_edge
        self._centres = _mel_centres()

    def batch(self, waves: torch.Tensor, n_windows: int, rng: np.random.Generator,
              conditions: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(S*M, samples) waveforms, speaker by speaker -> the (S*M, 40, mel) log-mels of the windows that
        end them, and the waveforms after PRE_ROLL in their rooms and noise. Window j of speaker i is heard in
        condition (i + j) % `conditions`, and each speaker at a room position of its own."""
        x = waves.numpy().astype(np.float64)
        n = len(x)
        slot = np.arange(n) // n_windows
        cond = (slot + np.arange(n) % n_windows) % conditions
        gains = np.zeros((n, N_MELS))
        if self.p_edge:
            # windows at an utterance's start or end hold some silence, in the room and noise like the rest:
            # the pipeline embeds such windows at every pause, the trimmed training clips hold none
            for row in np.flatnonzero(rng.random(n) < self.p_edge):
                cut = int(rng.uniform(0.1, 0.5) * WINDOW_SAMPLES)
                if rng.random() < 0.5:
                    x[row, : PRE_ROLL + cut] = 0.0
                else:
                    x[row, -cut:] = 0.0
        for c in range(conditions):
            rows = np.flatnonzero(cond == c)
            if rng.random() < self.p_clean:
                continue
            x[rows] = self._room_and_noise(x, rows, slot[rows], rng)
            gains[rows] = self._channel(rng)
        mel, heard = window_log_mels(torch.from_numpy(x).float())
        return mel + torch.from_numpy(gains).float()[:, None, :], heard

    def render(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One whole recording in a random room under random noise (a fixed, seeded test condition)."""
        x = np.concatenate([np.zeros(PRE_ROLL), wave.astype(np.float64)])[None]
        y = self._room_and_noise(x, np.array([0]), np.array([int(rng.integers(4))]), rng, babble=False, p=1.0)
        return y[0, PRE_ROLL:]

    def _room_and_noise(self, x: np.ndarray, rows: np.ndarray, positions: np.ndarray,
                        rng: np.random.Generator, babble: bool = True, p: float = 0.8) -> np.ndarray:
        """Rows `rows` of x in one room (each at its talker position) under one noise, each with probability p."""
        from scipy.signal import fftconvolve

        y = x[rows]
        if self.rooms and rng.random() < p:
            room = self.rooms[rng.integers(len(self.rooms))]
            for position in np.unique(positions % len(room)):
                at = positions % len(room) == position
                ir = room[position][: y.shape[1]]  # later taps reach no sample of the window
                y[at] = fftconvolve(y[at], ir[None, :], axes=1)[:, : y.shape[1]]
        if rng.random() < p:
            kinds = ["coloured"] + ["recorded"] * bool(self.noises) + ["babble"] * babble
            noise = self._noise(kinds[rng.integers(len(kinds))], x, rows, y.shape[1], rng)
            speech = np.mean(y[:, PRE_ROLL:] ** 2, axis=1) + 1e-10
            level = np.mean(noise[:, PRE_ROLL:] ** 2, axis=1) + 1e-10
            snr = rng.uniform(*self.snr)
            y = y + noise * np.sqrt(speech / level * 10 ** (-snr / 10))[:, None]
        return y * 10 ** (rng.uniform(-20, 6) / 20)  # gain: the level the window is recorded at

    def _noise(self, kind: str, x: np.ndarray, rows: np.ndarray, samples: int,
               rng: np.random.Generator) -> np.ndarray:
        if kind == "coloured":
            return _coloured_noise(len(rows), samples, np.full(len(rows), rng.uniform(0, 2)), rng)
        if kind == "recorded":
            rec = self.noises[rng.integers(len(self.noises))]
            rec = np.tile(rec, -(-(samples + len(rec)) // len(rec)))
            starts = rng.integers(0, len(rec) - samples, size=len(rows))
            return np.stack([rec[s: s + samples] for s in starts])
        # babble: 3-6 other windows of the batch, summed
        others = rng.integers(0, len(x), size=(len(rows), int(rng.integers(3, 7))))
        return x[others].sum(axis=1)

    def _channel(self, rng: np.random.Generator) -> np.ndarray:
        """Natural-log power gains over the mel bands: a band limit (telephone, or a codec's low-pass) and a
        smooth random equaliser."""
        f, db = self._centres, np.zeros(N_MELS)
        band = rng.random()
        if band < 0.15:  # telephone: 300-3400 Hz
            db -= 60 / (1 + np.exp(-(f - 3400) / 100)) + 60 / (1 + np.exp((f - 300) / 30))
        elif band < 0.35:  # a low-pass somewhere between 3.5 and 7.6 kHz
            cut = rng.uniform(3500, FMAX)
            db -= 60 / (1 + np.exp(-(f - cut) / (0.03 * cut)))
        if rng.random() < 0.7:  # equaliser: six cosines over the bands, up to 4 dB standard deviation
            k = np.arange(1, 7)
            db += (rng.normal(0, 1, 6) * rng.uniform(0, 4) / np.sqrt(3)) @ np.cos(np.pi * np.outer(k, np.arange(N_MELS)) / (N_MELS - 1))
        return db / 10 * np.log(10)


def _mel_centres() -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(N_MELS + 2, fmin=FMIN, fmax=FMAX)[1:-1]


def window_log_mels(waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows read over SPAN samples -> (the uncentred log-mels of each one's last WINDOW_SAMPLES,
    the samples after PRE_ROLL)."""
    heard = waves[:, PRE_ROLL:]
    return log_mel(heard[:, -WINDOW_SAMPLES:], center=False), heard


def load_acoustics(rir_dirs: list[Path], noise_dirs: list[Path], seed: int, p_clean: float,
                   p_edge: float) -> Acoustics:
    """Acoustics, with unreadable files reported as one ValueError."""
    try:
        return Acoustics(rir_dirs, noise_dirs, seed=seed, p_clean=p_clean, p_edge=p_edge)
    except AudioError as e:
        raise ValueError(str(e)) from None
