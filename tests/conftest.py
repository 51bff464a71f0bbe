"""Shared fixtures: a tiny random-weight model (so no test depends on the bundled model's quality),
synthetic recordings written with soundfile, and the `diarize` CLI run in-process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from diarize.cli import app
from diarize.model import EncoderConfig, SpeakerEncoder, save_checkpoint

# a tiny model gains nothing from threads; on a busy machine they only spin against each other
torch.set_num_threads(1)

SR = 16000  # Hz


def synthetic_voices(seconds: float = 3.0, sr: int = SR, speakers: int = 2, seed: int = 0,
                     noise: float = 0.003) -> np.ndarray:
    """Synthetic speech: 0.6 s harmonic bursts (f0 110, 210, 320 Hz by speaker, in turn) every 0.9 s,
    over a faint noise floor (`noise`: its RMS). Float32 mono in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = noise * rng.standard_normal(len(t))
    f0s = [110.0, 210.0, 320.0][:speakers]
    start, k = 0.1, 0
    while start + 0.6 <= seconds:
        burst = (t >= start) & (t < start + 0.6)
        wave[burst] += sum(0.2 / h * np.sin(2 * np.pi * h * f0s[k % speakers] * t[burst]) for h in range(1, 6))
        start, k = start + 0.9, k + 1
    return wave.astype(np.float32)


@pytest.fixture
def voices():
    """voices(seconds=3.0, sr=16000, speakers=2, seed=0, noise=0.003): the synthetic speech wave described above."""
    return synthetic_voices


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A valid diarize checkpoint with random weights, small enough to run in milliseconds, calibrated for
    the speaker count on 6 synthetic held-out speakers as `diarize train` does."""
    from synthetic import random_voice, write_speakers

    from diarize.data import build_cache, list_dataset
    from diarize.validation import calibrate_encoder, speaker_set

    torch.manual_seed(0)
    encoder = SpeakerEncoder(EncoderConfig(lstm_hidden=16, dense=(16,), n_outputs=8)).eval()
    held_out = tmp_path_factory.mktemp("held_out")
    rng = np.random.default_rng(5)
    write_speakers(held_out, [random_voice(rng) for _ in range(6)], 4, rng, seconds=(2.0, 3.0))
    windows = speaker_set("held_out", build_cache(list_dataset(held_out), held_out / "cache"), 4)
    calibration = calibrate_encoder(encoder, windows, torch.device("cpu"))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, encoder, calibration=calibration.as_dict())
    return path


@pytest.fixture
def make_audio(tmp_path):
    """make_audio(name, wave=None, sr=16000, channels=1, **soundfile_kwargs) -> path of a file in
    tmp_path; the wave defaults to 3 s of two synthetic voices, copied to every channel."""
    def make(name: str, wave: np.ndarray | None = None, sr: int = SR, channels: int = 1, **kwargs) -> Path:
        wave = synthetic_voices(sr=sr) if wave is None else np.asarray(wave)
        if channels > 1:
            wave = np.repeat(wave[:, None], channels, axis=1)
        path = tmp_path / name
        sf.write(path, wave, sr, **kwargs)
        return path

    return make


@pytest.fixture
def diarize(tiny_model):
    """diarize(*args) runs the CLI in-process and returns the typer Result; `cluster`, `embed` and
    `info` get the tiny model (and --device cpu) unless the arguments name a --model."""
    runner = CliRunner()

    def run(*args):
        args = [str(a) for a in args]
        if args and args[0] in ("cluster", "embed", "info") and "--model" not in args and "-m" not in args:
            args += ["--model", str(tiny_model)] + (["--device", "cpu"] if args[0] != "info" else [])
        return runner.invoke(app, args)

    return run


@pytest.fixture
def fails_cleanly():
    """fails_cleanly(result, *names): a non-zero exit with an `error:` line on stderr naming every one of
    `names`, and no traceback (in-process, an uncaught exception would show as result.exception)."""
    def check(result, *names: str) -> str:
        assert result.exit_code != 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors, result.output
        assert any(all(str(n) in line for n in names) for line in errors), (names, errors)
        return "\n".join(errors)

    return check


@pytest.fixture
def succeeds():
    """succeeds(result): exit 0 with no error line and no traceback; returns stderr (warnings)."""
    def check(result) -> str:
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and "error:" not in result.stderr, result.output
        return result.stderr

    return check
