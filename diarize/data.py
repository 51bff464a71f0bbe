"""Training data: list speakers' files, cache their log-mels on disk, draw S speakers x M window batches."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .audio import AudioError, audio_files_in, load_audio, log_mel
from .hparams import FMAX, FMIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WINDOW_FRAMES

EXTRA_FRAMES = 8  # drawn beyond a window so that speed perturbation has frames to stretch into
TRIM_DB = 40.0  # leading/trailing frames this far under a file's peak are silence, not speaker


class DataError(ValueError):
    """A dataset that cannot be used; the message says why."""


@dataclass
class Dataset:
    """Audio files and their speakers."""
    paths: list[Path]
    speakers: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def list_dataset(source: str | Path) -> Dataset:
    """A folder with one subfolder per speaker (files at any depth, VoxCeleb layout), or a TSV/CSV manifest
    with `path` and `speaker` columns (paths relative to the manifest's folder)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.is_dir():
        paths, speakers = [], []
        for spk_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in audio_files_in(spk_dir):
                paths.append(f)
                speakers.append(spk_dir.name)
        if not paths:
            loose = len(audio_files_in(source))  # all directly in it: one in a subfolder would be a speaker's
            raise DataError(f"{source}: no audio files in speaker subfolders" + (
                f" ({loose} directly in it: put each speaker's files in a subfolder named after them)"
                if loose else ""))
        return Dataset(paths, speakers)
    delimiter = "," if source.suffix.lower() == ".csv" else "\t"
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f, delimiter=delimiter, skipinitialspace=True)  # "a.wav, alice"
            columns = reader.fieldnames or ()  # read from the file: an empty one has none
            # a spreadsheet's "Path" or " speaker" is the column meant
            reader.fieldnames = [c.strip().lower() for c in columns]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{source}: not a text manifest ({e})") from None
    if not columns:
        raise DataError(f"{source}: the manifest is empty (it needs a header with 'path' and 'speaker' columns)")
    if not {"path", "speaker"} <= set(reader.fieldnames):
        split = "commas (a .csv)" if delimiter == "," else "tabs (any manifest but a .csv)"
        raise DataError(f"{source}: a manifest needs a header with 'path' and 'speaker' columns, separated by "
                        f"{split}; its header reads {delimiter.join(columns)!r}")
    if not rows:
        raise DataError(f"{source}: the manifest lists no files (a header alone)")
    for n, r in enumerate(rows, start=2):
        if not (r["path"] or "").strip() or not (r["speaker"] or "").strip():
            raise DataError(f"{source}:{n}: a row needs both a path and a speaker")
    root = source.parent
    return Dataset([root / r["path"].strip() for r in rows], [r["speaker"].strip() for r in rows])


def split_speakers(data: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out `n_val` whole speakers (drawn with `seed`) for validation."""
    names = sorted(set(data.speakers))
    if n_val < 2:
        raise DataError(f"--val-speakers {n_val}: validation needs at least 2 speakers (0: none)")
    if n_val > len(names) - 2:  # training needs 2 speakers too
        left = f"leaves {len(names) - n_val} to train on" if n_val <= len(names) else "is more than there are"
        raise DataError(f"--val-speakers {n_val}: holding out {n_val} of the {len(names)} speakers {left}; "
                        f"training needs at least 2")
    held = set(np.random.default_rng(seed).choice(names, size=n_val, replace=False).tolist())
    train, val = Dataset([], []), Dataset([], [])
    for path, spk in zip(data.paths, data.speakers):
        part = val if spk in held else train
        part.paths.append(path)
        part.speakers.append(spk)
    return train, val


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, int, int] | str:
    """(samples, log-mels, first and last frame within TRIM_DB of the loudest), or why it cannot be read."""
    try:
        wave = load_audio(path)
    except AudioError as e:
        return str(e)
    if len(wave) == 0:
        return f"{path}: no samples"
    feats = log_mel(wave).numpy()
    return wave, feats, *_voiced_span(feats)


def _features(path: Path) -> np.ndarray | str:
    """Trimmed log-mels of one file as float16, or the reason it could not be read."""
    read = _read(path)
    if isinstance(read, str):
        return read
    _, feats, first, last = read
    return feats[first: last + 1].astype(np.float16)


def _samples(path: Path) -> np.ndarray | str:
    """The file's 16 kHz samples as int16, trimmed as _features trims its frames (the waveforms that
    augmentation works on), or the reason it could not be read."""
    read = _read(path)
    if isinstance(read, str):
        return read
    wave, _, first, last = read
    return (np.clip(wave[first * HOP_LENGTH: (last + 1) * HOP_LENGTH], -1, 1) * 32767).astype(np.int16)


def _voiced_span(feats: np.ndarray) -> tuple[int, int]:
    """First and last frame within TRIM_DB of the file's loudest frame."""
    energy = feats.max(axis=1)
    voiced = np.flatnonzero(energy > energy.max() - TRIM_DB / 10 * np.log(10))
    return int(voiced[0]), int(voiced[-1])


@dataclass
class FeatureCache:
    """Every file's log-mels (float16 rows of mels) or samples (int16) in one memory-mapped array, rows
    indexed by offsets."""
    frames: np.ndarray  # (total_frames, mels) or (total_samples,), memory-mapped
    offsets: np.ndarray  # start row of each kept file
    lengths: np.ndarray  # frames of each kept file
    speakers: list[str]  # speaker of each kept file
    skipped: list[str] = field(default_factory=list)  # "path: reason" for every unreadable file


CACHE_KINDS = {"mel": (np.float16, (N_MELS,), "frames.f16"), "wave": (np.int16, (), "samples.i16")}  # dtype, row, file


def _cache_key(data: Dataset, kind: str) -> str:
    h = hashlib.sha1(json.dumps([SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS, FMIN, FMAX, TRIM_DB]
                                + ([] if kind == "mel" else [kind])).encode())
    for p, s in zip(data.paths, data.speakers):
        st = p.stat() if p.exists() else None
        h.update(f"{p.resolve()}\0{s}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_cache(data: Dataset, cache_dir: str | Path, workers: int = 1,
                hook: Callable[..., None] | None = None, kind: str = "mel") -> FeatureCache:
    """Compute log-mels (kind "mel") or trimmed samples ("wave") once, in `workers` processes, and
    memory-map them; a later call with the same files and front end reuses them. Unreadable files are
    skipped and listed, never fatal."""
    dtype, row, name = CACHE_KINDS[kind]
    read = _features if kind == "mel" else _samples
    cache_dir = Path(cache_dir) / _cache_key(data, kind)
    index_path = cache_dir / "index.json"
    if not index_path.exists():
        made = list(itertools.takewhile(lambda folder: not folder.exists(), (cache_dir, *cache_dir.parents)))
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_orphans(cache_dir)
        offsets, lengths, speakers, skipped, total = [], [], [], [], 0
        # temporary names per process: torchrun's processes (or two jobs sharing a cache) may build the
        # same cache at once; each writes its own copy and renames it into place
        tmp = cache_dir / f"{name}.{os.getpid()}.tmp"
        ctx = multiprocessing.get_context("spawn")
        try:
            with open(tmp, "wb") as out, ctx.Pool(workers, ignore_interrupts) if workers > 1 else _Serial() as pool:
                for i, (result, spk) in enumerate(zip(pool.imap(read, data.paths, chunksize=8),
                                                      data.speakers)):
                    if isinstance(result, str):
                        skipped.append(result)
                    else:
                        out.write(result.tobytes())
                        offsets.append(total)
                        lengths.append(len(result))
                        speakers.append(spk)
                        total += len(result)
                    if hook:
                        hook("features", completed=i + 1, total=len(data))
        except BaseException as e:  # Ctrl-C included: no partial cache left behind
            tmp.unlink(missing_ok=True)
            if isinstance(e, KeyboardInterrupt):  # a stop: nor the folders made for it, deepest first (not on
                for folder in made:  # an error: another process may be about to write in an empty one)
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise
        os.replace(tmp, cache_dir / name)
        index = {"offsets": offsets, "lengths": lengths, "speakers": speakers, "skipped": skipped,
                 "total": total}
        tmp_index = cache_dir / f"index.json.{os.getpid()}.tmp"
        tmp_index.write_text(json.dumps(index))
        os.replace(tmp_index, index_path)  # the index appears last: its presence means the cache is whole
    index = json.loads(index_path.read_text())
    frames = (np.memmap(cache_dir / name, dtype=dtype, mode="r", shape=(index["total"], *row))
              if index["total"] else np.zeros((0, *row), dtype))
    return FeatureCache(frames, np.array(index["offsets"], dtype=np.int64),
                        np.array(index["lengths"], dtype=np.int64), index["speakers"], index["skipped"])


def _remove_orphans(cache_dir: Path) -> None:
    """Delete the temporary files of builds whose process is gone (killed: SIGTERM, SIGKILL, out of memory)."""
    for tmp in cache_dir.glob("*.tmp"):
        try:
            os.kill(int(tmp.name.split(".")[-2]), 0)  # <name>.<pid>.tmp: is that process alive?
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError):  # not ours to judge: another user's live process, an odd name
            pass


def ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C to their parent, which stops them: else each prints its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Serial:
    """A stand-in for a process pool when workers=1."""
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items, chunksize=1):
        return map(fn, items)


FILES_CAP = 16  # a speaker with this many files or more is drawn at full weight


class BatchSampler:
    """Draws batches of S speakers x M windows of `span` rows (log-mel frames, or samples of a wave cache).

    A speaker is drawn with weight min(files, FILES_CAP): speakers with a single recording (one
    LibriSpeech clip, a one-word command) would otherwise fill batches with same-recording pairs, which
    teach the network to match recordings (channel, session) rather than voices. A speaker's M windows
    come from M different files where it has that many. Speakers with no file of at least `min_rows`
    are dropped; `dropped` lists them.

    `speeds` (wave caches only) turns each speaker into one identity per speed factor: a window of
    identity (speaker, f) is read over f x span samples and resampled to span, which changes tempo and
    pitch together (Kaldi's 0.9/1.1 speed perturbation); the same voice at two speeds counts as two
    speakers, so the corpus offers three times its voices.
    """

    def __init__(self, cache: FeatureCache, span: int = WINDOW_FRAMES + EXTRA_FRAMES,
                 min_rows: int = WINDOW_FRAMES, speeds: tuple[float, ...] = (1.0,)):
        self.cache, self.span, self.speeds = cache, span, speeds
        self.pad_mode = "edge" if cache.frames.ndim == 2 else "constant"  # frames repeat, samples fall silent
        by_speaker: dict[str, list[int]] = {}
        for i, spk in enumerate(cache.speakers):
            if cache.lengths[i] >= min_rows:
                by_speaker.setdefault(spk, []).append(i)
        self.dropped = sorted(set(cache.speakers) - set(by_speaker))
        self.speakers = sorted(by_speaker)
        self.files = [np.array(by_speaker[s]) for s in self.speakers]
        counts = np.array([min(len(f), FILES_CAP) for f in self.files], dtype=float)
        self.speaker_weights = np.repeat(counts / counts.sum() / len(speeds), len(speeds))

    @property
    def identities(self) -> int:
        return len(self.speakers) * len(self.speeds)

    def batch(self, rng: np.random.Generator, n_speakers: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S*M, span, ...) float32 windows, speaker by speaker, and their (S*M,) identity indices. Short
        files are padded (log-mels by repeating their last frame, samples with silence)."""
        if n_speakers > self.identities:
            raise DataError(f"--speakers-per-batch {n_speakers} exceeds the {self.identities} usable speakers")
        chosen = rng.choice(self.identities, size=n_speakers, replace=False, p=self.speaker_weights)
        out = np.empty((n_speakers * n_windows, self.span, *self.cache.frames.shape[1:]), dtype=np.float32)
        for k, identity in enumerate(chosen):
            files = self.files[identity // len(self.speeds)]
            speed = self.speeds[identity % len(self.speeds)]
            for j, f in enumerate(rng.choice(files, size=n_windows, replace=len(files) < n_windows)):
                out[k * n_windows + j] = self._window(rng, f, speed)
        return torch.from_numpy(out), torch.from_numpy(np.repeat(chosen, n_windows))

    def _window(self, rng: np.random.Generator, f: int, speed: float) -> np.ndarray:
        start, length = self.cache.offsets[f], self.cache.lengths[f]
        span = int(round(self.span * speed))
        take = min(span, length)
        off = rng.integers(0, length - take + 1)
        win = np.asarray(self.cache.frames[start + off: start + off + take], dtype=np.float32)
        if self.cache.frames.dtype == np.int16:
            win = win / 32768
        if take < span:
            win = np.pad(win, ((0, span - take),) + ((0, 0),) * (win.ndim - 1), mode=self.pad_mode)
        if speed != 1.0:
            from scipy.signal import resample_poly

            win = resample_poly(win, 100, int(round(100 * speed)))[: self.span]
            win = np.pad(win, (0, self.span - len(win)))
        return win


def utterance_windows(feats: np.ndarray, hop: int = WINDOW_FRAMES // 2, max_windows: int = 16) -> np.ndarray:
    """Evenly spaced 40-frame windows over one utterance (at most `max_windows`), for validation."""
    if len(feats) < WINDOW_FRAMES:
        feats = np.pad(feats, ((0, WINDOW_FRAMES - len(feats)), (0, 0)), mode="edge")
    starts = np.arange(0, len(feats) - WINDOW_FRAMES + 1, hop)
    if len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
    return np.stack([feats[s: s + WINDOW_FRAMES] for s in starts]).astype(np.float32)
