"""Speech detection on 10 ms frames: silero-vad (default) or an energy detector, both kept off the noise floor."""
from __future__ import annotations

import queue
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from scipy.ndimage import binary_closing, binary_opening, uniform_filter1d

from .hparams import FRAME_SECONDS, HOP_LENGTH, SAMPLE_RATE

ABSOLUTE_FLOOR_DB = -70.0  # frames quieter than this (dB re a full-scale sine) are never speech
FLOOR_BLIP = 0.05  # seconds: a stretch at (or off) the noise floor shorter than this is ignored
FLOOR_RANGE_DB = 40.0  # the floor check needs loud speech this far above the floor. In white noise at 30 dB
# SNR (a range of 36 dB) it cut soft speech (missed 3.9% -> 9.6% on the dev conversations), at 20 dB more
# (DER 32.3% -> 40.8%); clean recordings span about 100 dB, the AMI clips 35-51 dB
SILERO_CHUNK = 512  # samples silero-vad scores at a time at 16 kHz (32 ms)


def energy_speech(energy_db: np.ndarray, threshold: float = 0.5, min_speech: float = 0.2,
                  min_silence: float = 0.3) -> np.ndarray:
    """Speech mask from frame energies: above `threshold` of the way from the noise floor (10th
    percentile) to the loud speech level (99th), smoothed so that pauses under `min_silence` s are
    bridged and bursts under `min_speech` s are dropped."""
    if len(energy_db) == 0:
        return np.zeros(0, dtype=bool)
    smooth = uniform_filter1d(energy_db, size=5, mode="nearest")
    floor, peak = np.percentile(smooth, 10), np.percentile(smooth, 99)
    speech = (smooth > floor + threshold * (peak - floor)) & (smooth > ABSOLUTE_FLOOR_DB)
    return smooth_mask(speech, min_speech, min_silence)


def above_floor(energy_db: np.ndarray, margin_db: float = 3.0) -> np.ndarray:
    """Frames louder than the recording's noise floor (its quietest 1%) by `margin_db`: nobody speaks
    at the floor, so whatever a detector or a bridged pause puts there is not speech. In a noisy
    recording soft speech sits at the floor too, and every frame passes."""
    if len(energy_db) == 0:
        return np.zeros(0, dtype=bool)
    if is_noisy(energy_db):
        return np.ones(len(energy_db), dtype=bool)
    smooth = uniform_filter1d(energy_db, size=3, mode="nearest")
    return smooth_mask(smooth > np.percentile(smooth, 1) + margin_db, FLOOR_BLIP, FLOOR_BLIP)


def is_noisy(energy_db: np.ndarray) -> bool:
    """Loud speech (the 95th percentile of frame energy) is under FLOOR_RANGE_DB above the noise floor
    (the quietest 1%)."""
    if len(energy_db) == 0:
        return False
    floor, loud = np.percentile(uniform_filter1d(energy_db, size=3, mode="nearest"), [1, 95])
    return bool(loud - floor < FLOOR_RANGE_DB)


def smooth_mask(speech: np.ndarray, min_speech: float, min_silence: float) -> np.ndarray:
    gap = max(1, int(round(min_silence / FRAME_SECONDS)))
    burst = max(1, int(round(min_speech / FRAME_SECONDS)))
    padded = np.pad(speech, gap, constant_values=False)
    speech = binary_closing(padded, structure=np.ones(gap))[gap:-gap]
    return binary_opening(speech, structure=np.ones(burst))


class SileroSpeech:
    """silero-vad (the pip package ships its model) scored chunk by chunk as audio streams past. Each chunk
    is scored from a fresh state, so several threads may score chunks at once (`score`) while the
    probabilities are kept in chunk order (`add`)."""

    def __init__(self):
        with _silero_model():  # loaded now: a missing package is an error before any audio is read
            pass
        self.probs: list[np.ndarray] = []

    @staticmethod
    def score(chunk: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms of the chunk (a partial last 32 ms is not scored)."""
        n = len(chunk) // SILERO_CHUNK * SILERO_CHUNK
        if not n:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode(), _silero_model() as model:
            return model.audio_forward(torch.from_numpy(chunk[:n]), SAMPLE_RATE)[0].numpy()

    def add(self, probs: np.ndarray) -> None:
        if len(probs):
            self.probs.append(probs)

    def speech(self, n_frames: int, threshold: float = 0.5, min_speech: float = 0.2,
               min_silence: float = 0.3) -> np.ndarray:
        probs = np.concatenate(self.probs) if self.probs else np.zeros(1)
        idx = np.minimum(np.arange(n_frames) * HOP_LENGTH // SILERO_CHUNK, len(probs) - 1)
        return smooth_mask(probs[idx] > threshold, min_speech, min_silence)


_idle_models: queue.SimpleQueue = queue.SimpleQueue()  # loaded silero-vad models that no thread is using


@contextmanager
def _silero_model() -> Iterator:
    """A silero-vad model for this thread alone (audio_forward keeps its state in the model): taken from
    the idle ones, loaded when none is idle, so a process loads one per thread that scores at once."""
    try:
        model = _idle_models.get_nowait()
    except queue.Empty:
        model = _load_silero()
    try:
        yield model
    finally:
        _idle_models.put(model)


def _load_silero():
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # its import sets torch to one thread for the whole process
    except ImportError:
        raise ValueError("--vad silero needs the silero-vad package (pip install silero-vad), or use --vad energy") from None
    finally:
        torch.set_num_threads(threads)
    try:  # the ONNX runtime runs the same model 2.6x faster here (202x vs 77x real time, one thread)
        import onnxruntime  # noqa: F401
        return load_silero_vad(onnx=True)
    except ImportError:
        return load_silero_vad()
