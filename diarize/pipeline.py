"""Inference: stream a recording through features and the encoder, find speech, cluster segments into
speakers, relabel windows by speaker centroid and merge them into turns."""
from __future__ import annotations

import functools
import heapq
import os
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.ndimage import binary_dilation, uniform_filter1d

from .audio import (AudioError, Decoding, audio_duration, audio_warnings, load_audio_header, stream_audio,
                    stream_log_mel)
from .calibration import Calibration, for_recording, normalise
from .cluster import centroids, cluster_embeddings, pool_neighbours, refine, with_outputs
from .hparams import FRAME_SECONDS, HOP_LENGTH, SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SECONDS
from .model import SpeakerEncoder, load_model
from .overlap import OverlapDetector, load_detector
from .vad import SILERO_CHUNK, SileroSpeech, above_floor, energy_speech, is_noisy
from .writers import Turn, merge_turns

Hook = Callable[..., None]
SILERO_BACKLOG = 2  # audio chunks (60 s each) that may wait for each silero-vad thread: memory stays bounded
# threads scoring silero-vad, a quarter of the cores. On 2 cores a second one was no faster (155-161x
# against 159-168x real time on 30 min): the cores are busy with the embeddings; alone, silero-vad ran
# 1.5x faster on two
SILERO_THREADS = max(1, min(4, (os.cpu_count() or 1) // 4))


@dataclass(frozen=True)
class PipelineConfig:
    window_hop: float = 0.2  # seconds between the starts of successive 0.4 s windows
    segment_seconds: float = 1.2  # speech is cut into segments this long; each is one point to cluster
    noisy_segment_seconds: float = 2.4  # the same in a noisy recording (vad.is_noisy), where each window's
    # embedding is noisier and more of them are averaged: white noise at 10 / 20 / 30 dB SNR, the 8 dev
    # conversations 35.2 / 24.4 / 17.8% -> 26.7 / 17.9 / 13.9% DER, 16 others at 10 / 30 dB 42.8 / 23.0% ->
    # 33.7 / 16.6% (2.0 s split a noisy one-speaker recording, 1.6 s gained less); clean ones are not noisy
    vad: str = "silero"  # speech detector: "silero" (silero-vad) or "energy" (frame energy of the samples)
    energy_threshold: float = 0.2  # energy detector: fraction of the way from noise floor to speech level
    silero_threshold: float = 0.1  # silero-vad: speech probability (0.1 beat 0.2 on both dev sets)
    min_speech: float = 0.2  # seconds: shorter bursts are not speech
    min_silence: float = 0.3  # seconds: shorter pauses are bridged
    floor_margin: float | None = 3.0  # dB: frames this close to the noise floor are never speech (None: off)
    cluster: str = "ahc"  # "ahc" or "hdbscan" when the speaker count is estimated (cluster.py)
    min_cluster_size: int = 5  # segments (at least 2% of them); smaller HDBSCAN clusters join the nearest speaker
    smooth_windows: int = 5  # windows over which speaker similarities are averaged when relabelling
    min_turn: float = 0.5  # seconds: shorter turns are absorbed by their neighbours
    speech_pad: float = 0.1  # seconds: turns reach this far past detected speech (not onto the noise floor)
    max_pause: float = 0.8  # seconds: a speaker's pause this short stays inside the turn (as annotators mark it)
    output_weight: float = 0.75  # once the count is found, speakers are refined on the embeddings and the
    # encoder's output distributions together, this share on the outputs (0: embeddings alone); see cluster.py
    neighbour_weight: float = 0.25  # who said what (not the count) is settled on each segment pooled with the
    # segments touching it in its stretch of speech, at this weight (0: each alone); see cluster.pool_neighbours
    overlap: bool = True  # overlapped speech (overlap.py's detector) gets a second speaker
    min_overlap: float = 0.2  # seconds: shorter stretches of overlap are not given a second speaker
    overlap_reach: float = 0.5  # seconds: ...and only one whose own turn comes at least this close
    batch_size: int = 256  # windows per forward pass
    chunk_seconds: float = 60.0  # audio decoded and featurised this much at a time

    def __post_init__(self):
        # checked here, not where each is used: a wrong setting fails before minutes of embedding
        if self.vad not in ("silero", "energy"):
            raise ValueError(f"unknown speech detector {self.vad!r}; use silero or energy")
        if self.cluster not in ("ahc", "hdbscan"):
            raise ValueError(f"unknown clustering method {self.cluster!r}; use ahc or hdbscan")
        for name in ("batch_size", "min_cluster_size", "smooth_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} {value!r}: a whole number, 1 or more")
        for name in ("window_hop", "segment_seconds", "noisy_segment_seconds", "energy_threshold",
                     "silero_threshold", "output_weight", "neighbour_weight", "min_speech", "min_silence",
                     "min_turn", "speech_pad", "max_pause", "min_overlap", "overlap_reach", "chunk_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ValueError(f"{name} {value!r}: a number")
            positive = name in ("segment_seconds", "noisy_segment_seconds", "chunk_seconds")
            if value < 0 or (positive and value <= 0):
                raise ValueError(f"{name} {value:g}: {'above 0' if positive else '0 or more'}")
        for name in ("energy_threshold", "silero_threshold", "output_weight", "neighbour_weight"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name):g}: a share, between 0 and 1")
        if not isinstance(self.overlap, (bool, np.bool_)):  # "no" would be true
            raise ValueError(f"overlap {self.overlap!r}: True or False")
        margin = self.floor_margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float, np.number))
                                   or not 0 <= margin < np.inf):
            raise ValueError(f"floor_margin {self.floor_margin!r}: dB, 0 or more, or None (off)")
        if not FRAME_SECONDS <= self.window_hop <= WINDOW_SECONDS:  # a longer hop would skip audio
            raise ValueError(f"window hop {self.window_hop:g} s: use {FRAME_SECONDS:g}-{WINDOW_SECONDS:g} s "
                             f"(at most the window length)")

    @property
    def hop_frames(self) -> int:
        return max(1, int(round(self.window_hop / FRAME_SECONDS)))


@dataclass
class Windows:
    """Embeddings of every window of a recording, with what speech detection needs."""
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    start: np.ndarray  # (N,) seconds
    energy_db: np.ndarray  # (frames,) dB re a full-scale sine, from the samples (no log-mel floor)
    n_frames: int
    duration: float  # seconds of audio (frames are centred, so n_frames * 10 ms runs a frame over)
    silero: SileroSpeech | None = None
    overlap: np.ndarray | None = None  # (frames,) probability of overlapped speech, where the detector ran
    overlap_threshold: float = 0.5  # the detector's: from this probability a frame counts as overlapped
    warnings: tuple[str, ...] = ()  # what is odd about the file (audio.audio_warnings)
    source: str = ""  # the file, as given: what warnings about it are prefixed with
    outputs: np.ndarray | None = None  # (N, K) float16: each window's softmax output, the distribution the KL compares

    @property
    def end(self) -> np.ndarray:
        return self.start + WINDOW_FRAMES * FRAME_SECONDS


@dataclass
class Diarization:
    """Result of `diarize`: speaker turns, and the embeddings they came from."""
    file_id: str
    duration: float  # seconds
    turns: list[Turn]
    speakers: list[str]
    # (the arrays are left out of the repr: printed, a result shows its turns, not thousands of numbers)
    speaker_embeddings: np.ndarray = field(repr=False)  # (speakers, D) L2-normalised centroids, `speakers` order
    segments: dict[str, np.ndarray] = field(repr=False)  # start, end, embeddings, labels of the clustered segments
    speech: np.ndarray = field(repr=False)  # (frames,) bool speech mask at 10 ms
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    warnings: list[str] = field(default_factory=list)

    def serialize(self) -> list[dict]:
        """pyannote-style records: seconds rounded to milliseconds."""
        return [{"start": round(t.start, 3), "end": round(t.end, 3), "speaker": t.speaker} for t in self.turns]


class StageTimer(defaultdict):
    """Seconds per stage. Stages nest (decoding runs inside the feature generator): time spent in an
    inner stage is taken off the outer one, so the stages add up to the wall time."""

    def __init__(self):
        super().__init__(float)
        self._open: list[str] = []

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self._open.append(stage)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - t0
            self[stage] += elapsed
            if self._open:
                self[self._open[-1]] -= elapsed


def _timed(items, timer: StageTimer, stage: str):
    it = iter(items)
    while True:
        with timer(stage):
            item = next(it, None)
        if item is None:
            return
        yield item


@torch.inference_mode()
def embed_windows(path: str | Path, encoder: SpeakerEncoder, config: PipelineConfig = PipelineConfig(),
                  hook: Hook | None = None, timer: StageTimer | None = None,
                  detector: OverlapDetector | None = None) -> Windows:
    """One pass over the file: decode, log-mel, and embed every window (hop `config.window_hop`), in chunks;
    with a `detector`, mark overlapped speech too."""
    timer = timer if timer is not None else StageTimer()
    path = Path(path)
    duration = audio_duration(path)
    device = next(encoder.parameters()).device
    hop = config.hop_frames
    silero = SileroSpeech() if config.vad == "silero" else None
    backlog: deque = deque()  # silero-vad's jobs, in the order of the chunks
    decoding = Decoding()  # NaN or infinite samples met while decoding, damage that ended it

    def audio_chunks(scoring: ThreadPoolExecutor | None):
        carry = np.zeros(0, np.float32)  # samples after the chunk's last whole 32 ms: scored with the next
        for chunk in _timed(stream_audio(path, config.chunk_seconds, decoding), timer, "decode"):
            if scoring is not None:
                # resampled chunks are not whole 32 ms steps: dropping each one's tail would move every
                # later speech probability earlier (by ~30 ms a minute, 1.5-2 s an hour)
                carry = np.concatenate([carry, chunk])
                whole = len(carry) // SILERO_CHUNK * SILERO_CHUNK
                backlog.append(scoring.submit(SileroSpeech.score, carry[:whole]))
                carry = carry[whole:]
                if len(backlog) > SILERO_BACKLOG * SILERO_THREADS:
                    with timer("speech detection"):
                        silero.add(backlog.popleft().result())
            yield chunk

    embeddings, outputs, starts, energies, overlap = [], [], [], [], []
    pending = torch.zeros(0, encoder.config.n_mels)  # frames not yet covered by a full window
    offset = 0  # frame index of pending[0]
    recent = pending  # the last WINDOW_FRAMES frames seen, for the tail window
    with ExitStack() as stack:
        scoring = None
        if silero is not None:
            # silero-vad scores the chunks on threads and cores of its own (its ONNX session releases the
            # GIL) while features and embeddings run here: 30 minutes on 2 cores took 13.8-14.2 s one after
            # the other with two torch threads, 10.0-10.8 s side by side with one
            scoring = stack.enter_context(ThreadPoolExecutor(max_workers=SILERO_THREADS))
            stack.enter_context(torch_threads(max(1, torch.get_num_threads() - SILERO_THREADS)))
        for frames, energy_db in _timed(stream_log_mel(audio_chunks(scoring)), timer, "features"):
            energies.append(energy_db)
            if detector is not None:
                with timer("overlap detection"):
                    overlap.append(detector.overlap_probability(frames).astype(np.float16))
            pending = torch.cat([pending, frames])
            recent = torch.cat([recent, frames])[-WINDOW_FRAMES:]
            n = (len(pending) - WINDOW_FRAMES) // hop + 1
            if n > 0:
                with timer("embeddings"):
                    emb, out = _embed(encoder, pending.unfold(0, WINDOW_FRAMES, hop)[:n], config.batch_size, device)
                    embeddings.append(emb)
                    outputs.append(out)
                starts.append(offset + hop * np.arange(n))
                pending, offset = pending[n * hop:], offset + n * hop
            if hook:
                hook("embed", completed=min(duration, (offset + len(pending)) * FRAME_SECONDS), total=duration)
        with timer("speech detection"):  # what silero-vad has left to do once the embeddings are done
            for job in backlog:
                silero.add(job.result())
    n_frames = offset + len(pending)
    if n_frames and (not starts or starts[-1][-1] + WINDOW_FRAMES < n_frames):
        # the tail after the last full window (or a recording under one window): one last window, padded
        with timer("embeddings"):
            emb, out = _embed(encoder, _last_window(recent)[None].transpose(1, 2), config.batch_size, device)
            embeddings.append(emb)
            outputs.append(out)
        starts.append(np.array([max(0, n_frames - WINDOW_FRAMES)]))
    dim = encoder.config.embedding_dim
    return Windows(np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32),
                   np.concatenate(starts) * FRAME_SECONDS if starts else np.zeros(0),
                   np.concatenate(energies) if energies else np.zeros(0), n_frames, min(duration, n_frames * FRAME_SECONDS), silero,
                   (np.concatenate(overlap) if overlap else np.zeros(0, np.float16)) if detector is not None else None,
                   detector.threshold if detector is not None else 0.5,
                   tuple(_file_warnings(path, decoding)), str(path),
                   np.concatenate(outputs) if outputs else np.zeros((0, encoder.config.n_outputs), np.float16))


def _file_warnings(path: Path, decoding: Decoding) -> list[str]:
    try:
        found = audio_warnings(path, decoding.nonfinite)
    except AudioError:  # read a moment ago: a file replaced or removed since is not worth failing its result
        found = []
    return found + ([decoding.stopped] if decoding.stopped else [])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch uses `n` CPU threads inside the block (the setting is process-wide, so it is put back after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _last_window(recent: torch.Tensor) -> torch.Tensor:
    """The recording's last WINDOW_FRAMES frames, edge-padded when it is shorter than a window."""
    if len(recent) < WINDOW_FRAMES:
        recent = torch.cat([recent, recent[-1:].expand(WINDOW_FRAMES - len(recent), -1)])
    return recent


def _embed(encoder: SpeakerEncoder, windows: torch.Tensor, batch_size: int, device: torch.device
           ) -> tuple[np.ndarray, np.ndarray]:
    """(n, mel, time) unfolded windows -> (n, D) embeddings and (n, K) softmax outputs (float16), of one pass."""
    windows = windows.transpose(1, 2)  # unfold puts time last: back to (n, time, mel)
    embeddings, outputs = [], []
    for i in range(0, len(windows), batch_size):
        log_p, emb = encoder.forward_and_embed(windows[i: i + batch_size].to(device))
        embeddings.append(emb.float().cpu())
        outputs.append(log_p.exp().half().cpu())
    return torch.cat(embeddings).numpy(), torch.cat(outputs).numpy()


def speech_mask(windows: Windows, config: PipelineConfig, heard: np.ndarray | None = None) -> np.ndarray:
    """(frames,) bool: where someone speaks (the detector's speech above the noise floor, `heard`)."""
    if windows.silero is not None:
        speech = windows.silero.speech(windows.n_frames, config.silero_threshold, config.min_speech, config.min_silence)
    elif config.vad == "energy":
        speech = energy_speech(windows.energy_db, config.energy_threshold, config.min_speech, config.min_silence)
    else:
        raise ValueError("these windows carry no silero-vad scores: embed them with vad='silero', or use vad='energy'")
    return speech & (audible(windows, config) if heard is None else heard)


def audible(windows: Windows, config: PipelineConfig) -> np.ndarray:
    """(frames,) bool: frames above the recording's noise floor (all of them when the check is off)."""
    if config.floor_margin is None:
        return np.ones(windows.n_frames, dtype=bool)
    return above_floor(windows.energy_db, config.floor_margin)[: windows.n_frames]


def regions(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame runs where mask is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def speech_windows(windows: Windows, speech: np.ndarray, hop_frames: int) -> np.ndarray:
    """Indices of windows whose central hop-long stretch holds speech."""
    first = np.round(windows.start / FRAME_SECONDS).astype(int)
    centre = first + WINDOW_FRAMES // 2
    lo, hi = np.clip(centre - hop_frames // 2, 0, len(speech)), np.clip(centre + (hop_frames + 1) // 2, 0, len(speech))
    counts = np.concatenate([[0], np.cumsum(speech)])
    return np.flatnonzero(counts[np.maximum(hi, lo + 1).clip(max=len(speech))] - counts[lo] > 0)


def segment_embeddings(windows: Windows, idx: np.ndarray, speech: np.ndarray, seconds: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each speech region into segments of about `seconds`; a segment's embedding is the normalised
    mean of the windows centred in it. Returns (segment of each window in idx, starts, ends, embeddings)."""
    centres = windows.start[idx] + WINDOW_FRAMES * FRAME_SECONDS / 2
    seg_of = np.full(len(idx), -1)
    starts, ends, k = [], [], 0
    for a, b in regions(speech):
        a_s, b_s = a * FRAME_SECONDS, b * FRAME_SECONDS
        n_seg = max(1, int(round((b_s - a_s) / seconds)))
        inside = np.flatnonzero((centres >= a_s - 0.2) & (centres < b_s + 0.2) & (seg_of < 0))
        if not len(inside):
            continue
        part = np.minimum(((centres[inside] - a_s) / (b_s - a_s) * n_seg).astype(int).clip(0), n_seg - 1)
        for p in np.unique(part):
            seg_of[inside[part == p]] = k
            starts.append(a_s + p * (b_s - a_s) / n_seg)
            ends.append(a_s + (p + 1) * (b_s - a_s) / n_seg)  # the last one ends with its region, not the next
            k += 1
    orphan = seg_of < 0  # windows centred outside every region: join the nearest segment in time
    if orphan.any() and k:
        seg_centres = np.array([centres[seg_of == s].mean() for s in range(k)])
        seg_of[orphan] = np.abs(centres[orphan, None] - seg_centres[None]).argmin(axis=1)
    emb = windows.embeddings[idx]
    sums = np.zeros((k, emb.shape[1]), np.float32)
    np.add.at(sums, seg_of, emb)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return seg_of, np.array(starts), np.array(ends), sums


def window_similarities(windows: Windows, idx: np.ndarray, centre: np.ndarray, speakers: np.ndarray,
                        output_weight: float, chunk: int = 8192) -> np.ndarray:
    """(len(idx), k) cosine of each window `idx` (centred on the recording's `centre`, and beside its output
    distribution when `output_weight` > 0: cluster.with_outputs) with each of the `speakers` centroids.
    Computed a chunk of windows at a time: the window matrices of an hour took over 100 MB."""
    sims = np.empty((len(idx), len(speakers)))
    for i in range(0, len(idx), chunk):
        rows = idx[i: i + chunk]
        x = normalise(windows.embeddings[rows] - centre.astype(np.float32))
        if output_weight > 0:
            x = with_outputs(x, windows.outputs[rows], output_weight)
        sims[i: i + chunk] = x @ speakers.T
    return sims


def second_speakers(centres: np.ndarray, labels: np.ndarray, sims: np.ndarray, overlapped: np.ndarray,
                    turns: list[Turn], names: list[str], reach: float) -> np.ndarray:
    """For each window, the second speaker of overlapped speech there (len(names): none). Overlap is where
    turns meet: a stretch of it goes to a speaker whose own turn comes within `reach` seconds of it, the one
    each window is most like besides its own. A stretch far from any other speaker's turn is most often the
    detector hearing noise or a crowd (suite DER with overlap 21.9% given the second-nearest speaker
    anywhere, 21.2% this way; 21.3% with none)."""
    stretches = np.array(regions(overlapped), float).reshape(-1, 2) * FRAME_SECONDS
    if not len(stretches):
        return np.full(len(centres), len(names))
    gaps = np.full((len(stretches), len(names)), np.inf)  # from each stretch to each speaker's nearest turn
    for t in turns:
        k = names.index(t.speaker)
        gaps[:, k] = np.minimum(gaps[:, k], np.maximum(0.0, np.maximum(t.start - stretches[:, 1],
                                                                          stretches[:, 0] - t.end)))
    # each window belongs to the stretch nearest its centre: the last to start before it, or the next
    before = np.clip(np.searchsorted(stretches[:, 0], centres) - 1, 0, len(stretches) - 1)
    after = np.minimum(before + 1, len(stretches) - 1)
    away = lambda k: np.maximum(0.0, np.maximum(stretches[k, 0] - centres, centres - stretches[k, 1]))
    near = gaps[np.where(away(before) <= away(after), before, after)] <= reach
    near[np.arange(len(centres)), labels] = False
    return np.where(near.any(axis=1), np.where(near, sims, -np.inf).argmax(axis=1), len(names))


def windows_to_turns(centres: np.ndarray, labels: np.ndarray, speech: np.ndarray, names: list[str],
                     min_turn: float, duration: float, max_pause: float = 0.0,
                     heard: np.ndarray | None = None) -> list[Turn]:
    """Each speech frame takes the label of the nearest window centre; runs become turns, turns
    shorter than `min_turn` take their longer neighbour's speaker, and a gap of at most `max_pause`
    between two turns of one speaker joins them (a pause between speakers stays silence), except
    where the recording is at its noise floor (`heard` false)."""
    frames = np.flatnonzero(speech)
    if not len(frames) or not len(centres):
        return []
    t = (frames + 0.5) * FRAME_SECONDS
    pos = np.clip(np.searchsorted(centres, t), 1, len(centres) - 1) if len(centres) > 1 else np.zeros(len(t), int)
    if len(centres) > 1:
        pos = np.where(np.abs(centres[pos - 1] - t) <= np.abs(centres[pos] - t), pos - 1, pos)
    frame_label = np.full(len(speech), -1)
    frame_label[frames] = labels[pos]
    runs = []  # [start_frame, end_frame, label]
    for a, b in regions(speech):
        lab = frame_label[a:b]
        cuts = np.flatnonzero(np.diff(lab)) + 1
        for s, e in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [b - a]])):
            runs.append([a + s, a + e, lab[s]])
    runs = absorb_short_runs(runs, max(1, int(round(min_turn / FRAME_SECONDS))))
    pause = int(round(max_pause / FRAME_SECONDS))
    for prev, run in zip(runs, runs[1:]):  # runs are in time order
        if prev[2] == run[2] and run[0] - prev[1] <= pause:
            run[0] = prev[0]
    if heard is not None:
        runs = [(a + s, a + e, lab) for a, b, lab in runs for s, e in regions(heard[a:b])]
    # frame * 160 / 16000 is 6.1 where frame * 0.01 is 6.1000000000000005
    seconds = lambda frame: frame * HOP_LENGTH / SAMPLE_RATE
    turns = [Turn(float(seconds(a)), float(min(seconds(b), duration)), names[lab]) for a, b, lab in runs]
    return merge_turns(turns)


def absorb_short_runs(runs: list[list[int]], short: int) -> list[list[int]]:
    """[start, end, label] runs in time order -> the same speech with every run shorter than `short` frames
    joined to the longer of the runs it touches, shortest first, until none is left (what it joins may grow
    and join another in turn); a short run touching no other (speech alone between pauses) stays."""
    runs = [list(r) for r in runs]
    prev = list(range(-1, len(runs) - 1))  # a linked list: neighbours change as runs join
    nxt = list(range(1, len(runs) + 1))
    alive = [True] * len(runs)

    def touching(i: int) -> list[int]:
        return [j for j in (prev[i], nxt[i]) if 0 <= j < len(runs) and alive[j]
                and (runs[j][1] == runs[i][0] or runs[i][1] == runs[j][0])]

    def join(into: int, gone: int) -> None:  # `gone` disappears into its neighbour `into`
        runs[into][0], runs[into][1] = min(runs[into][0], runs[gone][0]), max(runs[into][1], runs[gone][1])
        alive[gone] = False
        p, n = prev[gone], nxt[gone]
        if 0 <= p:
            nxt[p] = n
        if n < len(runs):
            prev[n] = p

    def coalesce(i: int) -> None:  # touching runs of one speaker are one run
        for j in touching(i):
            if runs[j][2] == runs[i][2]:
                join(i, j)

    for i in range(len(runs)):
        if alive[i]:
            coalesce(i)
    queue = [(b - a, i) for i, (a, b, _) in enumerate(runs) if alive[i] and b - a < short]
    heapq.heapify(queue)
    while queue:
        length, i = heapq.heappop(queue)
        if not alive[i] or runs[i][1] - runs[i][0] != length:
            continue  # joined since it was queued
        neighbours = touching(i)
        if not neighbours:
            continue
        into = max(neighbours, key=lambda j: runs[j][1] - runs[j][0])
        join(into, i)
        coalesce(into)
        if runs[into][1] - runs[into][0] < short:
            heapq.heappush(queue, (runs[into][1] - runs[into][0], into))
    return [r for r, keep in zip(runs, alive) if keep]


def diarize(path: str | Path, model: SpeakerEncoder | str | Path | None = None, *,
            num_speakers: int | None = None, min_speakers: int | None = 1, max_speakers: int | None = None,
            config: PipelineConfig | dict = PipelineConfig(), device: str | None = "auto", seed: int = 0,
            hook: Hook | None = None, overlap_model: OverlapDetector | str | Path | None = None) -> Diarization:
    """Who spoke when in one recording.

    model: an encoder, a registry name or a path (default: the bundled model).
    overlap_model: the overlap detector used when config.overlap is on (default: the bundled one).
    num_speakers: exactly this many speakers; otherwise estimated within [min_speakers, max_speakers]
    (None: no bound).
    config: a PipelineConfig, or a dict of its fields.
    device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N", for a model given by name or path.
    seed: seeds every random choice of the clustering (0 .. 2**32 - 1): one seed, one result.
    hook: called as hook("embed", completed=seconds, total=seconds) while the file streams past.
    """
    path = Path(path)
    check_speaker_counts(num_speakers, min_speakers, max_speakers)
    check_seed(seed)
    config = as_config(config)
    load_audio_header(path)
    encoder = model if isinstance(model, SpeakerEncoder) else load_model(model, device)
    detector = None
    if config.overlap:
        detector = overlap_model if isinstance(overlap_model, OverlapDetector) else cached_detector(overlap_model)
    timer = StageTimer()
    windows = embed_windows(path, encoder, config, hook, timer, detector)
    return diarize_windows(windows, path.stem, num_speakers=num_speakers, min_speakers=min_speakers,
                           max_speakers=max_speakers, config=config, seed=seed, timer=timer,
                           calibration=encoder.calibration)


@functools.lru_cache(maxsize=4)
def cached_detector(path: str | Path | None) -> OverlapDetector:
    """Overlap detectors loaded once per process (a batch of files shares one)."""
    return load_detector(path)


def as_config(config: PipelineConfig | dict) -> PipelineConfig:
    """A PipelineConfig from itself or from a dict of its fields; TypeError naming what is wrong."""
    if isinstance(config, PipelineConfig):
        return config
    if not isinstance(config, dict):
        raise TypeError(f"config: a PipelineConfig or a dict of its fields, not {type(config).__name__}")
    unknown = sorted(set(config) - {f.name for f in fields(PipelineConfig)})
    if unknown:
        raise TypeError(f"config: no setting named {', '.join(map(repr, unknown))}")
    return PipelineConfig(**config)


def check_seed(seed: int) -> None:
    """ValueError unless `seed` is one the random generators take: a whole number, 0 .. 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed {seed!r}: a whole number, 0 .. {2**32 - 1}")


def check_speaker_counts(num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> None:
    """ValueError unless the counts are whole numbers >= 1 that agree (num_speakers within the bounds);
    None is no bound."""
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                        ("max_speakers", max_speakers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} {value!r}: a speaker count is a whole number, 1 or more")
    hi = max_speakers if max_speakers is not None else float("inf")
    min_speakers = min_speakers or 1
    if min_speakers > hi:
        raise ValueError(f"min_speakers {min_speakers} is above max_speakers {max_speakers}")
    if num_speakers is not None and num_speakers < min_speakers:
        raise ValueError(f"num_speakers {num_speakers} is below min_speakers {min_speakers}")
    if num_speakers is not None and num_speakers > hi:
        raise ValueError(f"num_speakers {num_speakers} is above max_speakers {max_speakers}")


def diarize_windows(windows: Windows, file_id: str, *, num_speakers: int | None = None,
                    min_speakers: int | None = 1, max_speakers: int | None = None,
                    config: PipelineConfig | dict = PipelineConfig(), seed: int = 0,
                    timer: StageTimer | None = None, calibration: Calibration | None = None) -> Diarization:
    """The steps after embedding: speech detection, segments, clustering, resegmentation, turns.
    `calibration` (the encoder's) is needed unless `num_speakers` is given (and used then too, if given)."""
    min_speakers = 1 if min_speakers is None else min_speakers
    check_speaker_counts(num_speakers, min_speakers, max_speakers)
    check_seed(seed)
    config = as_config(config)
    timer = timer if timer is not None else StageTimer()
    hop = config.hop_frames
    warnings = list(windows.warnings)
    named = windows.source or file_id  # the file as the user gave it, as every other warning names it
    with timer("speech detection"):
        heard = audible(windows, config)
        speech = speech_mask(windows, config, heard)
        idx = speech_windows(windows, speech, hop)
    dim = windows.embeddings.shape[1]
    empty = {"start": np.zeros(0), "end": np.zeros(0), "embeddings": np.zeros((0, dim), np.float32),
             "labels": np.zeros(0, int)}
    duration = windows.duration
    if not len(idx):
        warnings.append(f"{named}: no speech found")
        return Diarization(file_id, duration, [], [], np.zeros((0, dim), np.float32), empty, speech,
                           dict(timer), warnings)
    with timer("clustering"):
        seconds = config.noisy_segment_seconds if is_noisy(windows.energy_db) else config.segment_seconds
        seg_of, seg_start, seg_end, seg_emb = segment_embeddings(windows, idx, speech, seconds)
        asked = max(num_speakers or 0, min_speakers)
        if asked > len(seg_emb):
            n = len(seg_emb)
            warnings.append(f"{named}: {asked} speakers asked for but only {n} speech segment{'s' * (n != 1)}; "
                            f"found {n} speaker{'s' * (n != 1)} at most")
        # embeddings of one recording share a common direction; removing it spreads speakers apart
        centre = seg_emb.mean(axis=0)
        seg_c = normalise(seg_emb - centre)
        if calibration is not None:
            calibration = for_recording(calibration, seg_c)  # moved to this recording's similarity scale
        touching = seg_end[:-1] == seg_start[1:]  # consecutive segments of one stretch (one formula gives both)
        # a count given is partitioned on the pooled segments; an estimated one on the segments as the
        # calibration read them (pooled, one voice's splits would be judged on another scale)
        labels = cluster_embeddings(seg_c if num_speakers is None else
                                    pool_neighbours(seg_c, touching, config.neighbour_weight),
                                    config.cluster, num_speakers, min_speakers, max_speakers,
                                    calibration, config.min_cluster_size, seed)
        weight = 0.0
        if windows.outputs is not None and config.output_weight > 0 and labels.max() > 0:
            # the count stands; who said what is settled on the embeddings and output distributions together
            # (cluster.with_outputs): suite DER 21.9 -> 21.3%, further conversations 22.1 -> 21.2%
            weight = config.output_weight
            seg_out = np.zeros((len(seg_c), windows.outputs.shape[1]))
            np.add.at(seg_out, seg_of, windows.outputs[idx])
            seg_c = with_outputs(seg_c, seg_out, weight)
            labels = refine(pool_neighbours(seg_c, touching, config.neighbour_weight), labels)
        # resegmentation: every speech window goes to its nearest speaker centroid, the similarities
        # first averaged over `smooth_windows` neighbours so that single stray windows do not flip
        sims = window_similarities(windows, idx, centre, centroids(seg_c, labels), weight)
        if config.smooth_windows > 1:
            sims = uniform_filter1d(sims, size=config.smooth_windows, axis=0, mode="nearest")
        win_labels = sims.argmax(axis=1)
        speaker_centroids = centroids(seg_emb, labels)
        names = [f"SPEAKER_{k:02d}" for k in range(len(speaker_centroids))]
        centres = windows.start[idx] + WINDOW_FRAMES * FRAME_SECONDS / 2
        # soft onsets and endings the detector cuts off belong to the turn; clustering kept to the core
        speech = binary_dilation(speech, np.ones(2 * int(round(config.speech_pad / FRAME_SECONDS)) + 1, bool)) & heard
        turns = windows_to_turns(centres, win_labels, speech, names, config.min_turn, duration, config.max_pause, heard)
        if config.overlap and windows.overlap is not None and len(names) > 1:
            overlapped = (windows.overlap[: len(speech)] >= windows.overlap_threshold) & speech
            second = second_speakers(centres, win_labels, sims, overlapped, turns, names, config.overlap_reach)
            # label len(names), named "", is no second speaker: its turns are dropped
            extra = windows_to_turns(centres, second, overlapped, names + [""], config.min_overlap, duration)
            turns = merge_turns(turns + [t for t in extra if t.speaker and t.end - t.start >= config.min_overlap])
    # a speaker whose windows all went to others in resegmentation has no turn: the others are renumbered
    # (names without a gap), and its segments go to the nearest speaker left, so that segment labels index
    # `speakers` and `speaker_embeddings`
    keep = [k for k, name in enumerate(names) if any(t.speaker == name for t in turns)]
    if not keep:  # (no turn at all: every one shorter than the shortest kept)
        labels, speaker_centroids = np.full(len(labels), -1), speaker_centroids[:0]
    elif len(keep) < len(names):
        renamed = {names[k]: f"SPEAKER_{i:02d}" for i, k in enumerate(keep)}
        turns = [Turn(t.start, t.end, renamed[t.speaker]) for t in turns]
        nearest = np.asarray(keep)[np.argmax(normalise(seg_emb) @ speaker_centroids[keep].T, axis=1)]
        labels = np.searchsorted(keep, np.where(np.isin(labels, keep), labels, nearest))
        speaker_centroids = centroids(seg_emb, labels)
        if len(keep) < asked <= len(seg_emb):  # (more than the segments: said above)
            many = f"{asked}" if num_speakers is not None else f"at least {asked}"
            warnings.append(f"{named}: {many} speakers asked for; {len(keep)} kept turns of their own (the "
                            f"others' speech went to them when every window was given its nearest speaker)")
    segments = {"start": seg_start, "end": np.minimum(seg_end, duration), "embeddings": seg_emb,
                "labels": labels}
    return Diarization(file_id, duration, turns, [f"SPEAKER_{i:02d}" for i in range(len(keep))],
                       speaker_centroids.astype(np.float32), segments, speech, dict(timer), warnings)
