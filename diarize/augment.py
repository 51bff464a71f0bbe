"""Augmentation synthesised on log-mel windows: gain, additive noise, reverberation, speed.

Working on the cached log-mels keeps training cheap on a CPU: each effect is applied to the mel power
spectrum it would produce (noise adds power, reverberation smears it forward in time with an exponential
decay, speed stretches time and shifts frequencies), with probability `p` each, per window.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .hparams import FMAX, FMIN, FRAME_SECONDS, N_MELS, WINDOW_FRAMES


@functools.lru_cache(maxsize=1)
def _mel_centres() -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(N_MELS + 2, fmin=FMIN, fmax=FMAX)[1:-1]


def _speed(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Resample (N, T, mel) windows as if played `factor` times faster: read `factor` frames per output
    frame, and at each mel centre f read the source at f / factor. Returns (N, 40, mel)."""
    span = x.shape[1]
    centres = _mel_centres()
    t = torch.arange(WINDOW_FRAMES, dtype=torch.float32)[None, :] * factor[:, None]  # (N, 40) source frames
    src_bins = torch.stack([torch.from_numpy(np.interp(centres / float(f), centres, np.arange(N_MELS)))
                            for f in factor]).float()  # (N, mel) source bin of each output bin
    grid = torch.stack(torch.broadcast_tensors(src_bins[:, None, :] / (N_MELS - 1) * 2 - 1,
                                               t[:, :, None] / (span - 1) * 2 - 1), dim=-1)
    return torch.nn.functional.grid_sample(x[:, None], grid, align_corners=True, padding_mode="border")[:, 0]


def augment(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """(N, 40+extra, mel) log-mel windows -> (N, 40, mel) augmented windows."""
    n = x.shape[0]
    draw = lambda: torch.rand(n, generator=generator)
    use = lambda: (draw() < p).float()[:, None, None]

    factor = torch.where(draw() < p, 0.9 + 0.2 * draw(), torch.ones(n))
    x = _speed(x, factor)

    power = x.exp()
    # reverberation: y_t = P_t + d * y_{t-1}, d from an RT60 of 0.2-0.8 s, mixed with the dry signal
    rt60 = 0.2 + 0.6 * draw()
    decay = torch.exp(-6.9 * FRAME_SECONDS / rt60)[:, None]
    wet, acc = torch.empty_like(power), torch.zeros_like(power[:, 0])
    for t in range(power.shape[1]):
        acc = power[:, t] + decay * acc
        wet[:, t] = acc * (1 - decay)
    power = power + use() * (wet - power)

    # noise: coloured (white to pink) noise power at 5-25 dB SNR, fluctuating like a short-time spectrum
    snr_db = 5 + 20 * draw()
    tilt = draw()[:, None] * torch.linspace(0, -2.0, N_MELS)[None, :]  # log-power slope over the bands
    shape = tilt.exp() / tilt.exp().mean(dim=1, keepdim=True)
    level = power.mean(dim=(1, 2)) * 10 ** (-snr_db / 10)
    noise = level[:, None, None] * shape[:, None, :] * _gamma_like(power, generator)
    power = power + use() * noise

    gain_db = -12 + 18 * draw()  # gain: a level shift of the whole window
    return torch.log(power + 1e-6) + use() * (gain_db / 10 * np.log(10))[:, None, None]


def _gamma_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(4, 4) noise (mean 1) from a seeded generator: the sum of 4 unit exponentials over 4."""
    u = torch.rand((4, *x.shape), generator=generator).clamp_min(1e-12)
    return -u.log().sum(dim=0) / 4
