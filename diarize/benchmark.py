"""`diarize benchmark`: time each stage of the pipeline and measure peak memory on one recording."""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import audio_duration, load_audio
from .hparams import SAMPLE_RATE
from .pipeline import PipelineConfig, diarize
from .writers import write_turns

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "meeting.wav"


def make_recording(path: str | Path, minutes: float, source: str | Path = EXAMPLE) -> Path:
    """Write a `minutes`-long 16 kHz recording by repeating `source` at varying gain, block by block
    (a 2-hour file is never held in memory)."""
    path = Path(path)
    clip = load_audio(source)
    total = int(minutes * 60 * SAMPLE_RATE)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            block = clip[: total - written] * rng.uniform(0.5, 1.0)
            f.write(block)
            written += len(block)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_benchmark(audio: str | Path, model=None, device: str = "auto",
                  config: PipelineConfig = PipelineConfig(), overlap_model: str | Path | None = None) -> dict:
    """Diarize `audio` once, after a 3 s warm-up, and report seconds per stage, real-time factor and peak
    memory (the warm-up's time apart, as startup_seconds)."""
    from .model import load_model

    encoder = model if hasattr(model, "embed") else load_model(model, device)
    duration = audio_duration(audio)
    with tempfile.TemporaryDirectory() as tmp:
        # what is paid once a process (imports, the detectors' loading, torch's first calls) is timed apart:
        # counted in, it made a 20 s recording look 10x slower than an hour's
        start = time.perf_counter()
        diarize(make_recording(Path(tmp) / "warm-up.wav", 0.05), encoder, config=config, overlap_model=overlap_model)
        startup = time.perf_counter() - start
    start = time.perf_counter()
    result = diarize(audio, encoder, config=config, overlap_model=overlap_model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_turns(result.turns, Path(tmp) / "out.rttm")
    stages = dict(result.timings, output=time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {"audio": str(audio), "audio_seconds": duration, "wall_seconds": wall, "rtf": wall / duration,
            "x_real_time": duration / wall, "seconds_per_hour": 3600 * wall / duration, "stages": stages,
            "startup_seconds": startup, "peak_rss_mb": peak_rss_mb(), "device": str(next(encoder.parameters()).device),
            "threads": __import__("torch").get_num_threads(), "speakers": len(result.speakers)}
