"""Audio loading and the log-mel front end: any file libsndfile reads -> 16 kHz mono -> (time, mel)."""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import torch

from .hparams import FMAX, FMIN, HOP_LENGTH, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, WINDOW_SECONDS


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}  # what folders are searched for


def audio_files_in(folder: str | Path) -> list[Path]:
    """The audio files under `folder`, recursively, in path order; hidden files and folders (a dot first:
    macOS's ._ copies beside each file, editors' and tools' own) are left out, as shells leave them."""
    folder = Path(folder)
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


class AudioError(ValueError):
    """An input that cannot be read as audio; the message names the file and the reason."""


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file to mono float32 at `sr` Hz. NaN/Inf samples become 0; clipping is kept as is."""
    path = Path(path)
    load_audio_header(path)
    try:
        wave, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors are varied; all mean "not readable audio"
        reason = str(e).splitlines()[-1] if str(e) else type(e).__name__
        raise AudioError(f"{path}: not readable audio ({reason})") from None
    return to_mono_16k(wave, file_sr, sr)


def to_mono_16k(wave: np.ndarray, file_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(samples, channels) or (samples,) at `file_sr` -> mono float32 at `sr`."""
    wave = _mono(np.asarray(wave, dtype=np.float32))
    if file_sr != sr and len(wave):
        import librosa  # imported lazily: it is slow to import and only needed here

        wave = librosa.resample(wave, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _mono(wave: np.ndarray) -> np.ndarray:
    """(samples, channels) or (samples,) -> (samples,) float32, channels averaged, NaN/Inf made silence."""
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    return np.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def audio_duration(path: str | Path) -> float:
    """Length in seconds from the header, without decoding; AudioError if the file is not readable audio."""
    info = load_audio_header(Path(path))
    return info.frames / info.samplerate


def audio_warnings(path: str | Path, nonfinite: int = 0) -> list[str]:
    """What is odd about a readable file but does not stop it being decoded: a WAV whose data stops
    before its header says (cut off while being written or copied) is decoded as far as it goes; a rate
    under telephone speech's 8 kHz lacks most of what tells voices apart; a file shorter than one window
    holds too little to tell anyone; `nonfinite` NaN or infinite samples (counted while decoding) are
    taken as silence."""
    info = load_audio_header(Path(path))
    out = []
    cut = re.search(r"^data : (\d+) \(should be (\d+)\)", info.extra_info, re.M)  # libsndfile's WAV log
    # a writer that streams to a pipe cannot know the length and leaves 0xFFFFFFFF (or 0x7FFFFFFF) there
    if cut and 0 < int(cut.group(2)) < int(cut.group(1)) < 0x7FFFFFFF:
        promised, held = int(cut.group(1)), int(cut.group(2))
        out.append(f"{path}: truncated: the header promises {info.duration * promised / held:.1f} s of audio, "
                   f"the file holds {info.duration:.1f} s; using what is there")
    if info.samplerate < 8000:
        out.append(f"{path}: sampled at {info.samplerate} Hz: nothing above {info.samplerate // 2} Hz is heard "
                   f"(the encoder learnt from 16 kHz speech)")
    if info.duration < WINDOW_SECONDS:
        out.append(f"{path}: {info.duration:.2f} s long, shorter than one {WINDOW_SECONDS:.1f} s window")
    if nonfinite:
        out.append(f"{path}: {nonfinite} samples are NaN or infinite; they are taken as silence")
    return out


@functools.lru_cache(maxsize=4)
def _mel_basis(device: str) -> torch.Tensor:
    import librosa

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return torch.from_numpy(basis).to(device)


def log_mel(wave: np.ndarray | torch.Tensor, device: str = "cpu", center: bool = True) -> torch.Tensor:
    """Log-mel power of a 16 kHz wave (or a batch of waves): (..., samples) -> (..., frames, mels).

    Frames are centred (librosa's convention), so frame t covers samples around t * HOP_LENGTH; with
    center=False frame t starts at sample t * HOP_LENGTH (for streamed chunks that carry their own
    context). The result is (time, mel): the network reads one row per 10 ms step.
    """
    x = torch.as_tensor(wave, dtype=torch.float32, device=device)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] < N_FFT // 2 + 1:  # reflect padding needs a few samples; silence is the honest pad
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.shape[-1]))
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=device),
                      center=center, pad_mode="reflect", return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (batch, freq, time)
    mel = torch.matmul(_mel_basis(str(device)), power)  # (batch, mel, time)
    out = torch.log(mel + LOG_FLOOR).transpose(1, 2)  # transpose, never reshape: (batch, time, mel)
    return out.reshape(*lead, out.shape[-2], out.shape[-1])


@dataclass
class Decoding:
    """What decoding a file met, for its warnings: NaN or infinite samples, and damaged data that ended it."""
    nonfinite: int = 0
    stopped: str = ""  # why and where decoding stopped before the end ("" when it did not)


def stream_audio(path: str | Path, chunk_seconds: float = 60.0, decoding: Decoding | None = None
                 ) -> Iterator[np.ndarray]:
    """Decode a file chunk by chunk as 16 kHz mono float32, so hours of audio never sit in memory whole.
    NaN and infinite samples become silence (counted in `decoding`). Data damaged part-way (a FLAC or MP3
    cut short while copied) ends the stream where it stops decoding, said in `decoding.stopped`; damage
    before any audio is an AudioError."""
    path = Path(path)
    load_audio_header(path)
    decoding = decoding if decoding is not None else Decoding()
    with sf.SoundFile(str(path)) as f:
        floats = f.subtype in ("FLOAT", "DOUBLE")  # only float samples can be NaN or infinite
        resampler = None
        if f.samplerate != SAMPLE_RATE:
            import soxr  # librosa's resampler, used here in its streaming form

            resampler = soxr.ResampleStream(f.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        block = max(1, int(chunk_seconds * f.samplerate))
        while True:
            start = f.tell()
            try:
                data = f.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
            except Exception as e:
                reason = str(e).splitlines()[-1][:100] if str(e) else type(e).__name__
                data = _decodable(f, start, block)
                if start + len(data) == 0:
                    raise AudioError(f"{path}: corrupt audio data ({reason})") from None
                decoding.stopped = (f"{path}: damaged or cut short after {(start + len(data)) / f.samplerate:.1f} s "
                                    f"({reason}); using the audio before it")
                last = True
            if floats:
                decoding.nonfinite += int((~np.isfinite(data)).sum())
            mono = _mono(data)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield mono
            if last:
                return


def _decodable(f: sf.SoundFile, start: int, block: int) -> np.ndarray:
    """The samples of a block from `start` that decode, read again in tenths of a second up to the damage."""
    f.seek(start)
    step, parts = max(1, f.samplerate // 10), []
    for _ in range(-(-block // step)):
        try:
            part = f.read(step, dtype="float32", always_2d=True)
        except Exception:
            break
        parts.append(part)
        if len(part) < step:
            break
    return np.concatenate(parts) if parts else np.zeros((0, f.channels), np.float32)


def load_audio_header(path: Path) -> sf._SoundFileInfo:
    """Check a file is readable audio holding at least one sample before decoding it; raises AudioError
    with the reason."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():  # the header is read first, then the samples: a pipe would be gone by then
        raise AudioError(f"{path}: not a regular file (a pipe or a device); save the audio to a file first")
    if not path.stat().st_size:  # libsndfile would say "Format not recognised"
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:
        reason = str(e).splitlines()[-1] if str(e) else type(e).__name__
        raise AudioError(f"{path}: not readable audio ({reason})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: no audio in this file (0 samples)")
    return info


def frame_energy_db(wave: np.ndarray, center: bool = True) -> np.ndarray:
    """Mean power of each 25 ms frame (the log-mel framing) in dB re a full-scale sine, from the samples
    themselves: unlike the log-mels it has no floor, so quiet recordings keep their noise floor."""
    wave = np.asarray(wave, dtype=np.float32)
    if center:
        wave = np.pad(wave, N_FFT // 2)
    if len(wave) < N_FFT:
        wave = np.pad(wave, (0, N_FFT - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, N_FFT)[::HOP_LENGTH]
    # each frame's mean taken out: a DC offset (a cheap sound card's, say) is no sound, and left in it
    # would lift the noise floor above quiet speech
    return 10 * np.log10(np.var(frames.astype(np.float64), axis=1) / 0.5 + 1e-12)


def stream_log_mel(chunks: Iterable[np.ndarray]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Log-mel frames of a chunked wave, identical to one centred STFT over the whole wave (zero-padded
    at both ends), with each frame's energy (`frame_energy_db`): ((frames, mels), (frames,)) per chunk,
    each frame emitted once."""
    pad = N_FFT // 2
    pending = np.zeros(pad, dtype=np.float32)  # the left half-window of frame 0
    last = False
    for chunk in itertools.chain(chunks, [None]):
        if chunk is None:  # the right half-window of the last frame (librosa's 1 + samples // hop frames)
            chunk, last = np.zeros(pad, dtype=np.float32), True
        pending = np.concatenate([pending, chunk])
        n = (len(pending) - N_FFT) // HOP_LENGTH + 1  # frames whose whole window is here
        if n > 0:
            span = pending[: (n - 1) * HOP_LENGTH + N_FFT]
            yield log_mel(span, center=False), frame_energy_db(span, center=False)
            pending = pending[n * HOP_LENGTH:]
        if last:
            return
