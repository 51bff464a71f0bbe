"""Overlapped speech: a small frame-level model that labels every 20 ms of a recording as non-speech, one
speaker or two or more at once, trained on simulated conversations with reference RTTMs.

It reads the same log-mels as the speaker encoder. A stack of dilated 1-D convolutions over time (a
receptive field of 2.5 s) is fast on a CPU and needs no recurrence: a recording is cut into blocks of
BLOCK_FRAMES with CONTEXT_FRAMES of context each side and scored in batches.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .audio import audio_files_in, load_audio, log_mel
from .hparams import FRAME_SECONDS, HOP_LENGTH, N_MELS
from .model import FORMAT_VERSION, MODELS_DIR, ModelError, load_checkpoint, write_checkpoint

CLASSES = ("non-speech", "one speaker", "overlap")
STRIDE = 2  # input frames per output step: 20 ms
BLOCK_FRAMES = 800  # 8 s scored at once: training chunks are this long, so each block is normalised alike
# frames of context each side of a block at inference: 0.4 s (1.3 s, half the receptive field, measured no better)
CONTEXT_FRAMES = 40
BUNDLED_DETECTOR = MODELS_DIR / "overlap" / "diarize-overlap.pt"

Hook = Callable[..., None]


@dataclass(frozen=True)
class OverlapConfig:
    channels: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)


class OverlapDetector(nn.Module):
    """(batch, frames, mel) log-mels -> (batch, frames // 2, 3) logits of CLASSES."""

    def __init__(self, config: OverlapConfig = OverlapConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.threshold = 0.5  # overlap probability from which a step counts as overlapped (set by training)
        self.source = ""
        self.inp = nn.Conv1d(N_MELS, c, kernel_size=4, stride=STRIDE, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv1d(c, c, 3, dilation=d, padding=d), nn.BatchNorm1d(c),
                                                  nn.ReLU()) for d in config.dilations)
        self.out = nn.Conv1d(c, len(CLASSES), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each block's level and scale removed (the recording's gain), its spectral and temporal shape kept
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
        h = torch.relu(self.inp(x.transpose(1, 2)))
        for block in self.blocks:
            h = h + block(h)  # residual: each layer adds context at twice the reach of the one before
        return self.out(h).transpose(1, 2)

    @torch.inference_mode()
    def overlap_probability(self, frames: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """(frames, mel) log-mels of a recording -> (frames,) probability of overlapped speech per 10 ms."""
        was = self.training
        self.eval()
        n = len(frames)
        pad = CONTEXT_FRAMES
        padded = torch.cat([frames[:1].expand(pad, -1), frames, frames[-1:].expand(pad + BLOCK_FRAMES, -1)])
        starts = range(0, max(n, 1), BLOCK_FRAMES)
        blocks = torch.stack([padded[s: s + BLOCK_FRAMES + 2 * pad] for s in starts])
        probs = torch.cat([torch.softmax(self(blocks[i: i + batch_size]), dim=-1)[..., 2]
                           for i in range(0, len(blocks), batch_size)])
        self.train(was)
        core = probs[:, pad // STRIDE: (pad + BLOCK_FRAMES) // STRIDE].reshape(-1)
        return np.repeat(core.numpy(), STRIDE)[:n]


def save_detector(path: Path, detector: OverlapDetector, **extra) -> None:
    write_checkpoint(path, {"format_version": FORMAT_VERSION, "kind": "overlap",
                            "config": dataclasses.asdict(detector.config), "state_dict": detector.state_dict(),
                            "threshold": detector.threshold, **extra})


def load_detector(path: str | Path | None = None) -> OverlapDetector:
    """An overlap detector from a file (default: the bundled one, BUNDLED_DETECTOR)."""
    path = Path(path) if path else BUNDLED_DETECTOR
    return detector_from_checkpoint(load_checkpoint(path), path)


def detector_from_checkpoint(ckpt: dict, path: Path) -> OverlapDetector:
    if ckpt.get("kind") != "overlap":
        raise ModelError(f"{path}: not an overlap detector (train one with diarize train-overlap)")
    config = ckpt["config"]
    detector = OverlapDetector(OverlapConfig(config["channels"], tuple(config["dilations"])))
    detector.load_state_dict(ckpt["state_dict"])
    detector.threshold, detector.source = float(ckpt["threshold"]), str(path)
    detector.metrics = ckpt.get("metrics", {})
    return detector.eval()


def frame_classes(rttm: Path, n_frames: int) -> np.ndarray:
    """(n_frames,) 0/1/2: how many reference speakers talk in each 10 ms frame (2 for two or more)."""
    from .writers import read_rttm

    count = np.zeros(n_frames, np.int8)
    for turns in read_rttm(rttm).values():
        for t in turns:
            count[int(round(t.start / FRAME_SECONDS)): int(round(t.end / FRAME_SECONDS))] += 1
    return np.minimum(count, 2)


def recordings(folders: list[Path]) -> list[Path]:
    """Every recording with a same-stem RTTM in `folders`, folder by folder, in name order within each;
    ValueError when a folder is missing or none is found."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: {'not a' if Path(folder).exists() else 'no such'} folder")
    found = [audio for folder in folders for audio in audio_files_in(folder) if audio.with_suffix(".rttm").exists()]
    if not found:
        raise ValueError(f"no recordings with same-stem RTTMs in {', '.join(map(str, folders))}")
    return found


def conversations(folders: list[Path], hook: Hook | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(16 kHz samples as int16, frame classes) of every recording with a same-stem RTTM in `folders`."""
    pairs = [(audio, audio.with_suffix(".rttm")) for audio in recordings(folders)]
    out = []
    for i, (audio, rttm) in enumerate(pairs):
        wave = load_audio(audio)
        out.append(((np.clip(wave, -1, 1) * 32767).astype(np.int16), frame_classes(rttm, len(wave) // HOP_LENGTH)))
        if hook:
            hook("features", completed=i + 1, total=len(pairs))
    return out


CHUNK_SAMPLES = BLOCK_FRAMES * HOP_LENGTH


def _chunk(data, rng: np.random.Generator, recording: int) -> tuple[np.ndarray, np.ndarray]:
    """A random 8 s stretch of one recording: samples and frame classes."""
    wave, classes = data[recording]
    start = int(rng.integers(0, max(1, len(classes) - BLOCK_FRAMES)))
    x = np.zeros(CHUNK_SAMPLES, np.float32)
    y = np.zeros(BLOCK_FRAMES, np.int64)
    part = wave[start * HOP_LENGTH: start * HOP_LENGTH + CHUNK_SAMPLES].astype(np.float32) / 32768
    x[: len(part)] = part
    lab = classes[start: start + BLOCK_FRAMES]
    y[: len(lab)] = lab
    return x, y


def _gate(first: int, frames: int) -> np.ndarray:
    """1 over `frames` frames from `first`, 0 elsewhere, with 50 ms fades."""
    gate = np.zeros(CHUNK_SAMPLES, np.float32)
    span = gate[first * HOP_LENGTH: (first + frames) * HOP_LENGTH]
    fade = np.hanning(1600).astype(np.float32)
    span[:] = 1
    span[:800], span[-800:] = fade[:800], fade[800:]
    return gate


def _chunks(data, rng: np.random.Generator, n: int, mix: float = 0.5, babble: float = 0.4
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random 8 s chunks: (n, frames, mel) log-mels and (n, frames // 2) classes.

    Simulated conversations overlap at turn starts only (2% of their frames), real meetings far more
    (17.5% of the speaker time of the real dev clips): with probability `mix` a 1-5 s stretch of the same
    recording (its room and noise) is laid over the chunk at -3 to +3 dB and the speaker counts add up.
    With probability `babble`, distant babble (4-12 other recordings summed, 5-20 dB down) runs under the
    chunk and counts as no one: a crowd in the background is not overlapped speech."""
    lengths = np.array([len(c) for _, c in data], float)
    draw = lambda: int(rng.choice(len(data), p=lengths / lengths.sum()))  # recordings by length
    xs, ys = [], []
    for _ in range(n):
        recording = draw()
        x, y = _chunk(data, rng, recording)
        level = np.sqrt(np.mean(x ** 2) + 1e-8)
        if rng.random() < mix:
            other, counts = _chunk(data, rng, recording)
            frames = int(rng.integers(100, 500))
            first = int(rng.integers(0, BLOCK_FRAMES - frames))
            gain = level / np.sqrt(np.mean(other ** 2) + 1e-8) * 10 ** (rng.uniform(-3, 3) / 20)
            x = x + other * _gate(first, frames) * gain
            mixed = np.zeros(BLOCK_FRAMES, np.int64)
            mixed[first: first + frames] = counts[first: first + frames]
            y = np.minimum(y + mixed, 2)
        if rng.random() < babble:
            crowd = sum(_chunk(data, rng, draw())[0] for _ in range(int(rng.integers(4, 13))))
            x = x + crowd * level / np.sqrt(np.mean(crowd ** 2) + 1e-8) * 10 ** (-rng.uniform(5, 20) / 20)
        xs.append(x)
        ys.append(y[::STRIDE])
    mels = log_mel(torch.from_numpy(np.stack(xs)))[:, :BLOCK_FRAMES]
    return mels, torch.from_numpy(np.stack(ys))


# A second speaker pays only where most of the frames marked are truly overlapped (each wrong one is a false
# alarm); validation conversations, every turn overlapping, hold ten times the overlap of common recordings
# (7.5% of frames against 0.7% of the speech of the development suite's simulated conversations), so the
# detector works at 3/4 precision there.
MIN_PRECISION = 0.75


def detection_figures(detector: OverlapDetector, data) -> dict[str, float]:
    """Frame-level overlap figures over whole recordings: the best F1 (checkpoints are chosen by it) with its
    precision, recall and threshold ("f1_precision", "f1_recall", "f1_threshold"); the working threshold, the
    F1's raised until precision reaches MIN_PRECISION (the F1's when none does), with its precision and
    recall ("threshold", "threshold_precision", "threshold_recall"); and the share of overlapped frames."""
    probs, truth = [], []
    for wave, classes in data:
        p = detector.overlap_probability(log_mel(wave.astype(np.float32) / 32768))[: len(classes)]
        probs.append(p)
        truth.append(classes[: len(p)] == 2)
    p, t = np.concatenate(probs), np.concatenate(truth)
    points = []
    for threshold in np.round(np.arange(0.1, 0.995, 0.01), 2):
        hit = p >= threshold
        tp = float((hit & t).sum())
        precision, recall = tp / max(hit.sum(), 1), tp / max(t.sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        points.append((float(threshold), float(precision), float(recall), float(f1)))
    best = max(points, key=lambda point: point[3])
    working = next((point for point in points if point[0] >= best[0] and point[1] >= MIN_PRECISION), best)
    return {"f1": best[3], "f1_precision": best[1], "f1_recall": best[2], "f1_threshold": best[0],
            "threshold": working[0], "threshold_precision": working[1], "threshold_recall": working[2],
            "overlap_share": float(t.mean())}


@dataclass(frozen=True)
class OverlapTrainConfig:
    steps: int = 3000
    batch: int = 32  # chunks of 8 s a step
    lr: float = 2e-3
    seed: int = 0
    val_every: int = 250


def train_detector(train_folders: list[Path], val_folders: list[Path], out_dir: Path,
                   config: OverlapTrainConfig = OverlapTrainConfig(), hook: Hook | None = None,
                   resume: Path | None = None) -> dict:
    """Train an overlap detector; writes out_dir/best.pt (best overlap F1 on the validation recordings, with
    the working threshold of detection_figures), out_dir/last.pt (the run at its last validation, or where
    Ctrl-C or SIGTERM stopped it after a whole step) and out_dir/log.jsonl.

    resume: a last.pt to continue from, in its own folder: the run keeps its batch, learning rate, seed and
    validation rounds, and trains to config.steps; every step's batch derives from (seed, step), so a resumed
    run to its own steps ends with the weights of an unbroken one (more steps stretch the learning-rate
    schedule). Without it, a run in out_dir is replaced once the recordings are read."""
    from .train import TrainingInterrupted, StopRequest

    hook = hook or (lambda *a, **k: None)
    # the recordings by name and in the order batches index them (a moved copy of the folders is the same data)
    data = {split: [audio.name for audio in recordings(folders)]
            for split, folders in (("train", train_folders), ("val", val_folders))}
    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        if state.get("kind") != "overlap" or "optimizer" not in state:
            raise ModelError(f"{resume}: holds no overlap-detector training run to resume")
        if state["data"] != data:
            raise ValueError(f"{resume}: the run was started on other recordings; resume it with the same DATA "
                             f"and --val, or start a new run")
        config = OverlapTrainConfig(**{**state["train_config"], "steps": config.steps})
        if state["step"] >= config.steps:
            raise ValueError(f"{resume} is at step {state['step']} already: give --steps above it to train further")
    val_data = conversations(val_folders, hook)  # first: a set that cannot be scored is said before DATA is read
    if not any((classes == 2).any() for _, classes in val_data):  # an F1 of nothing would choose the model
        raise ValueError(f"the validation recordings ({', '.join(map(str, val_folders))}) hold no overlapped "
                         f"speech: there is nothing to measure the detector on")
    train_data = conversations(train_folders, hook)
    _, sample = _chunks(train_data, np.random.default_rng(config.seed), 256)
    counts = np.bincount(sample.reshape(-1).numpy(), minlength=3).astype(float)
    # classes weighted by the inverse square root of their share: overlap is rare but must not be ignored
    weights = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
    torch.manual_seed(config.seed)
    detector = OverlapDetector()
    optimizer = torch.optim.Adam(detector.parameters(), lr=config.lr)
    step, best, running, history = 0, {"f1": -1.0}, None, []
    if state is not None:
        detector.load_state_dict(state["state_dict"])
        detector.threshold = state["threshold"]
        optimizer.load_state_dict(state["optimizer"])
        step, best, running, history = state["step"], state["best"], state["running_loss"], state["history"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if state is None:  # a new run: nothing of one before it is mixed in
        for name in ("last.pt", "best.pt"):
            (out_dir / name).unlink(missing_ok=True)
    # the log as of the checkpoint: rounds logged after it are redone and logged again
    (out_dir / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))

    def checkpoint() -> None:
        save_detector(out_dir / "last.pt", detector, step=step, best=best, running_loss=running, history=history,
                      train_config=dataclasses.asdict(config), data=data, optimizer=optimizer.state_dict())

    started, stop = time.time(), StopRequest(lambda: hook("stopping"))
    whole = True  # weights, optimiser and step count agree: a state to save
    try:
        while step < config.steps:
            if stop.requested:
                raise KeyboardInterrupt
            k = step + 1  # the step being taken: `step` counts those done, as the saved state does
            for group in optimizer.param_groups:
                # a plain float: a numpy one would not load with the weights (torch's weights_only)
                group["lr"] = float(config.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * k / config.steps))))
            x, y = _chunks(train_data, np.random.default_rng([config.seed, k]), config.batch)
            logits = detector(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1), weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            whole = False  # from here to the count below, weights and step disagree: nothing is saved
            optimizer.step()
            step = k
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            due = step % config.val_every == 0 or step == config.steps
            whole = not due  # a step due for validation is whole once validated and saved
            hook("step", step=step, total=config.steps, loss=running)
            if due:
                hook("validating", step=step)
                figures = detection_figures(detector, val_data)
                record = {"step": step, "loss": running, **figures, "seconds": time.time() - started}
                history.append(record)
                with open(out_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                hook("val", **record)
                if figures["f1"] > best["f1"]:
                    best = record
                    detector.threshold = figures["threshold"]
                    save_detector(out_dir / "best.pt", detector, metrics=record)
                checkpoint()
                whole = True
    except KeyboardInterrupt:
        if whole:  # else the last checkpoint stands, and a resume redoes the steps after it
            checkpoint()
        last = out_dir / "last.pt"
        raise TrainingInterrupted(last if last.exists() else None, int(stop.signum)) from None
    finally:
        stop.restore()
    return best
