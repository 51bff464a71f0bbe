"""The training loop: siamese KL encoder on S x M batches (drawn ahead in worker processes with --workers),
validation EER, best/last checkpoints, resume, and torchrun/DDP when launched with more than one process."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import PRE_ROLL, SPAN, WINDOW_SAMPLES, Acoustics, load_acoustics, window_log_mels
from .calibration import MAX_SPEAKERS, VOICE_NEEDS, voices_to_calibrate  # the calibration needs this many voices
from .data import BatchSampler, Dataset, build_cache, ignore_interrupts, utterance_windows
from .distill import TEACHER_SAMPLES, Teacher, relational_loss, resemblyzer_weights
from .hparams import WINDOW_FRAMES
from .loss import kl_hinge_loss
from .metrics import UnscorableSet
from .validation import (HeldOut, calibrate_encoder, clips_set, evaluate_sets, rooms_set, speaker_set,
                         utterance_embeddings)
from .model import (EncoderConfig, ModelError, SpeakerEncoder, encoder_from_checkpoint, load_checkpoint,
                    save_checkpoint)

Hook = Callable[..., None]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps in all (a resumed run continues to this count)
    speakers_per_batch: int = 32  # S
    windows_per_speaker: int = 4  # M: a batch holds S*M windows and every pair of them enters the loss
    lr: float = 1e-3  # Adam learning rate, cosine-decayed to 5% over `steps`
    margin: float = 2.0  # hinge margin on KL for different-speaker pairs
    augment: bool = False  # put the speech in rooms, noise and channels (augment.Acoustics)
    augment_clean: float = 0.75  # with augment: share of a batch's conditions left clean (augment.Acoustics);
    # 0.15 cost the clean and cross-corpus speakers far more than rooms gained (docs/experiments.md)
    augment_edges: float = 0.5  # with augment: share of windows cut at an utterance's edge (augment.Acoustics)
    speed_perturb: bool = False  # every speaker also at 0.9x and 1.1x speed, as two new speakers
    rir_dirs: tuple[str, ...] = ()  # impulse responses (beside simulated rooms) and noises to augment with
    noise_dirs: tuple[str, ...] = ()
    distill: float = 0.0  # weight of the relational distillation term towards Resemblyzer (0: none)
    seed: int = 0
    val_every: int = 200  # steps between validation rounds (EER) and checkpoints
    val_utterances: int = 20  # at most this many utterances per validation speaker
    val_speakers: int = 0  # speakers of the training data held out for validation: a resume holds out the same


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C/SIGTERM once the last completed step is saved; carries that checkpoint (None if
    there is none yet) and the signal's number."""


class RunRefused(ValueError):
    """The command asks a run for what it cannot do (resume it on other data, without its validation, past
    its end): a command line that cannot work."""


class WorkerDied(RuntimeError):
    """A process drawing batches (--workers) ended abruptly."""


class StopRequest:
    """Ctrl-C or SIGTERM asks the loop to stop after the step in flight, so the checkpoint it leaves is
    exactly a completed step; a second Ctrl-C stops at once. `on_request` is called at the first, to say so
    (a step due for validation can take minutes)."""

    def __init__(self, on_request: Callable[[], None] | None = None):
        self.requested, self.saved, self.signum, self.on_request = False, {}, signal.SIGINT, on_request
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        if self.on_request:
            self.on_request()

    def restore(self):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        # the optimiser imports torch._dynamo; imported after the process group exists, it keeps references
        # to it, so the group outlives destroy_process_group and gloo can abort the process at exit
        import torch._dynamo as _  # noqa: F401
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("DIARIZE_BACKEND") != "gloo" else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


CALIBRATION_SPEAKERS = 60  # training speakers the calibration is read on when no held-out ones are given
CALIBRATION_UTTERANCES = 10  # utterances of each


SPEEDS = (0.9, 1.0, 1.1)


def data_fingerprint(data: Dataset) -> str:
    """The speakers and file names of a dataset (not their folder: a moved copy is the same data)."""
    import hashlib

    pairs = sorted(f"{s}\0{Path(p).name}" for p, s in zip(data.paths, data.speakers))
    return hashlib.sha1("\n".join(pairs).encode()).hexdigest()[:16]


def needs_pairs(name: str, speakers: list[str], of: str = "files") -> None:
    """An EER needs same-speaker pairs: a validation set where no speaker has two `of` is refused."""
    if max(Counter(speakers).values()) < 2:
        raise UnscorableSet(f"validation set {name}: no speaker has 2 {of}; an EER needs same-speaker pairs", name)


def held_out_sets(val_data: Dataset | None, cache_dir: Path, per_speaker: int, more: list[tuple[str, Dataset]] = (),
                  rooms: bool = False, clips: Path | None = None, noise_dirs: list[Path] = (), workers: int = 1,
                  hook: Hook | None = None) -> list[HeldOut]:
    """The validation sets: `val_data` ("val"), each of `more`, `val_data` rendered in rooms with noise
    ("rooms"), and the single-speaker pieces of the recordings in `clips` ("clips")."""
    hook = hook or (lambda *a, **k: None)
    sets = []
    for name, data in ([("val", val_data)] if val_data is not None else []) + list(more):
        cache = build_cache(data, cache_dir, workers, hook)
        hook("data", split=name, speakers=len(set(cache.speakers)), files=len(cache.speakers),
             skipped=cache.skipped, dropped=[])
        if len(set(cache.speakers)) < 2:  # a set that cannot be scored is a mistake, not a reason to skip it
            raise UnscorableSet(f"validation set {name}: {len(set(cache.speakers))} speaker(s) with readable "
                                f"audio; an EER needs at least 2", name)
        held = speaker_set(name, cache, per_speaker)
        needs_pairs(name, held.speakers, "files with audio")  # found now, not after the steps before a round
        sets.append(held)
    if rooms and val_data is not None:
        sets.append(rooms_set("rooms", val_data, cache_dir, per_speaker, noise_dirs, workers, hook))
    if clips is not None:
        sets.append(clips_set("clips", clips))
    return sets


@dataclass(frozen=True)
class _Feed:
    """What the training batches are drawn from. A step's batch depends on (seed, step) alone, so worker
    processes can draw batches ahead of the step that needs them: a run gets the same batches with any
    number of workers, and a resumed run the ones it would have had."""
    data: Dataset
    cache_dir: Path
    config: TrainConfig

    @property
    def kind(self) -> str:
        """The feature cache's kind: augmentation and speed perturbation work on the waveform."""
        return "wave" if self.config.augment or self.config.speed_perturb else "mel"

    def sampler(self, cache) -> BatchSampler:
        if self.kind == "mel":
            return BatchSampler(cache)
        # the teacher hears 1.6 s ending with the window: on 0.4 s alone its similarities are near chance
        span = PRE_ROLL + TEACHER_SAMPLES if self.config.distill else SPAN
        return BatchSampler(cache, span, WINDOW_SAMPLES, SPEEDS if self.config.speed_perturb else (1.0,))

    def acoustics(self) -> Acoustics | None:
        c = self.config
        return (load_acoustics([Path(d) for d in c.rir_dirs], [Path(d) for d in c.noise_dirs], c.seed,
                               c.augment_clean, c.augment_edges) if c.augment else None)

    def drawer(self, sampler: BatchSampler, acoustics: Acoustics | None) -> Callable[[int, int], tuple]:
        """A function (step, speakers) -> (log-mel windows, identities, waveforms heard or None)."""
        c = self.config

        def draw(step: int, speakers: int) -> tuple:
            rng = np.random.default_rng([c.seed, step])
            x, labels = sampler.batch(rng, speakers, c.windows_per_speaker)
            heard = None
            if acoustics is not None:
                x, heard = acoustics.batch(x, c.windows_per_speaker, rng)
            elif c.speed_perturb:
                x, heard = window_log_mels(x)
            else:
                x = x[:, :WINDOW_FRAMES]
            return x, labels, heard if c.distill else None  # waveforms cross processes only when used
        return draw


_draw: Callable[[int, int], tuple] | Exception | None = None  # a worker process's drawing function


def _start_worker(feed: _Feed) -> None:
    global _draw
    ignore_interrupts()
    torch.set_num_threads(1)  # the workers share the cores with each other and the training process
    try:  # the parent built the cache (mapped here) and read the same acoustics
        _draw = feed.drawer(feed.sampler(build_cache(feed.data, feed.cache_dir, kind=feed.kind)), feed.acoustics())
    except Exception as e:  # a raising initializer breaks the pool without saying why: the first batch says it
        _draw = e


def _draw_in_worker(step: int, speakers: int) -> tuple:
    if isinstance(_draw, Exception):
        raise _draw
    return _draw(step, speakers)


class _Batches:
    """The batches of steps start..stop-1 in order, drawn in the training process or, with workers > 1,
    up to two a worker ahead in a pool of processes (one that says so when a worker dies, where a
    multiprocessing.Pool would wait for its batch for ever)."""

    def __init__(self, feed: _Feed, start: int, stop: int, speakers: int, workers: int, sampler: BatchSampler,
                 acoustics: Acoustics | None):
        self.next_step, self.stop, self.speakers, self.pending = start, stop, speakers, []
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _start_worker, (feed,))
            self.ahead = 2 * workers
        else:
            self.draw = feed.drawer(sampler, acoustics)  # the training process's own

    def __next__(self) -> tuple:
        if self.pool is None:
            self.next_step += 1
            return self.draw(self.next_step - 1, self.speakers)
        try:
            while len(self.pending) < self.ahead and self.next_step < self.stop:
                self.pending.append(self.pool.submit(_draw_in_worker, self.next_step, self.speakers))
                self.next_step += 1
            return self.pending.pop(0).result()
        except BrokenProcessPool:
            raise WorkerDied("a process drawing training batches died (out of memory?): resume from the "
                             "run's last.pt, with fewer --workers") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # the batches in flight take a fraction of a second


def train(train_data: Dataset, val_data: Dataset | None, out_dir: str | Path,
          encoder_config: EncoderConfig = EncoderConfig(), config: TrainConfig = TrainConfig(),
          device: torch.device = torch.device("cpu"), resume: str | Path | None = None,
          init: str | Path | None = None, cache_dir: str | Path | None = None, workers: int = 1,
          hook: Hook | None = None, more_val: list[tuple[str, Dataset]] = (), val_rooms: bool = False,
          val_clips: Path | None = None) -> dict:
    """Train an encoder; writes out_dir/last.pt (resumable), out_dir/best.pt (best mean validation EER over
    the held-out sets, weights only: a model file) and out_dir/log.jsonl (learning curve). Returns the final
    summary."""
    hook = hook or (lambda *a, **k: None)
    rank, world = _dist()
    out_dir = Path(out_dir)
    given_cache, cache_dir = cache_dir, Path(cache_dir) if cache_dir else out_dir / "features"
    # what the run is trained and validated on, kept with it: a resume on other data would compare its best
    # EER across sets
    fingerprints = {"training": data_fingerprint(train_data),
                    "validation": data_fingerprint(val_data) if val_data is not None else None,
                    "further": [[name, data_fingerprint(d)] for name, d in more_val] or None}
    if resume:  # a resumed run keeps its own settings, read before the data they decide on
        ckpt = load_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise ModelError(f"{resume}: holds no training state to resume (use --init to fine-tune from it)")
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["train_config"].items()}
        config = dataclasses.replace(TrainConfig(**saved), steps=config.steps)
        if not given_cache and ckpt.get("cache_dir") and Path(ckpt["cache_dir"]).is_dir():
            cache_dir = Path(ckpt["cache_dir"])  # the run's own feature cache: not built again elsewhere
        for split, now in fingerprints.items():
            started_on = ckpt.get("data", {}).get(split)  # absent from runs saved before it was recorded
            # a run begun with validation data (recorded, or a best EER saved before the record was kept) is
            # resumed with it: else best.pt, the validated model, would be chosen on less, or overwritten
            validated = started_on or (split == "validation" and ckpt["best_eer"] < float("inf"))
            if validated and now is None:
                raise RunRefused(f"{resume}: the run is validated; resume it with the same validation data "
                                 f"(--val{' and --also' if split == 'further' else ''})")
            if started_on and started_on != now:
                what = "--also" if split == "further" else split
                raise RunRefused(f"{resume}: the run was started on other {what} data (speakers or files "
                                 f"differ); resume it with the same DATA, --val and --also, or start a new run")
        if ckpt["step"] >= config.steps:
            raise RunRefused(f"{resume} is at step {ckpt['step']} already: give --steps above it to train further")
    feed = _Feed(train_data, cache_dir, config)
    # what can be checked without the audio is, before minutes of features: the speakers, the model to
    # start from, the distillation's teacher, the rooms and noises
    if config.distill and (world > 1 or feed.kind != "wave"):
        raise ValueError("distillation needs --augment or --speed-perturb (the teacher hears waveforms), "
                         "and one process")
    for split, data in (("training", train_data), ("validation", val_data)):
        if data is not None and len(set(data.speakers)) < 2:
            raise ValueError(f"the {split} data holds {len(set(data.speakers))} speaker(s): it needs at least 2")
    for name, data in ([("val", val_data)] if val_data is not None else []) + list(more_val):
        needs_pairs(name, data.speakers)  # (files that turn out unreadable are checked once read)
    start_from = encoder_from_checkpoint(load_checkpoint(init), init) if init and not resume else None
    teacher = Teacher(resemblyzer_weights()) if config.distill else None
    acoustics = feed.acoustics()  # whatever the workers: bad files said early
    train_cache = build_cache(train_data, cache_dir, workers, hook if rank == 0 else None, kind=feed.kind)
    sampler = feed.sampler(train_cache)
    hook("data", speakers=len(sampler.speakers), files=len(train_cache.speakers),
         skipped=train_cache.skipped, dropped=sampler.dropped)
    if len(sampler.speakers) < 2:
        raise ValueError(f"training needs at least 2 speakers with {WINDOW_FRAMES} frames of audio; "
                         f"found {len(sampler.speakers)}")
    val = held_out_sets(val_data, cache_dir, config.val_utterances, more_val, val_rooms, val_clips,
                        [Path(d) for d in config.noise_dirs], workers, hook) if rank == 0 else []
    # the speaker-count calibration is read on held-out speakers; a run without any reads it on training ones
    calibratable = lambda held: voices_to_calibrate([len(u) for u in held.utts], held.speakers)
    if val and val[0].recordings is None and calibratable(val[0]) >= MAX_SPEAKERS:
        held_out = val[0]
    else:
        held_out = speaker_set("train", train_cache, CALIBRATION_UTTERANCES, max_speakers=CALIBRATION_SPEAKERS)
        if rank == 0 and calibratable(held_out) >= MAX_SPEAKERS:  # fewer: it warns there is none
            hook("warning", message="the speaker-count calibration is read on training speakers (held-out "
                                    f"ones need --val with {MAX_SPEAKERS} or more speakers of {VOICE_NEEDS} "
                                    "each); recalibrate: diarize validate DATA --calibrate")

    step, best_eer, history = 0, float("inf"), []
    if resume:
        encoder = encoder_from_checkpoint(ckpt, resume)
        step, best_eer, history = ckpt["step"], ckpt["best_eer"], list(ckpt["history"])
    elif start_from is not None:
        encoder = start_from
    else:
        torch.manual_seed(config.seed)
        encoder = SpeakerEncoder(encoder_config)
    s = min(config.speakers_per_batch, len(sampler.speakers))  # after a resume: the run's own batch size
    encoder.to(device).train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
    schedule = lambda k: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(k, config.steps) / config.steps))
    model = torch.nn.parallel.DistributedDataParallel(encoder) if world > 1 else encoder
    hook("begin")  # every check passed: from here the run writes to out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume and rank == 0:  # the log as of the checkpoint: steps logged after it are redone and logged again
        (out_dir / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))

    def checkpoint(metrics: dict) -> None:
        extra = {"step": step, "best_eer": best_eer, "history": history, "metrics": metrics,
                 "calibration": calibration,
                 "running_loss": running, "train_config": dataclasses.asdict(config),
                 "data": fingerprints, "cache_dir": str(cache_dir.resolve()),
                 "optimizer": optimizer.state_dict()}
        save_checkpoint(out_dir / "last.pt", encoder, **extra)

    def log(record: dict) -> None:
        history.append(record)
        with open(out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # the logged loss is a running average: a resumed run carries it on, so its log matches an unbroken one
    running, started, metrics = (ckpt.get("running_loss") if resume else None), time.time(), {}
    calibration = ckpt.get("calibration") if resume else None
    uncalibrated = False  # a round has found no calibration and said why
    stop = StopRequest(lambda: hook("stopping"))
    whole = True  # weights, optimiser, step count and that step's validation agree: a state to save
    batches = _Batches(feed, step, config.steps, s, workers, sampler, acoustics)
    try:
        while step < config.steps:
            if stop.requested:
                raise KeyboardInterrupt
            # every step's randomness derives from (seed, step): a resumed run redraws the same batches
            torch.manual_seed(config.seed * 1_000_003 + step)
            try:
                x, labels, heard = next(batches)
            except WorkerDied:
                if stop.requested:  # the signal went to the whole process group and ended a worker too
                    raise KeyboardInterrupt from None
                raise
            for group in optimizer.param_groups:
                group["lr"] = float(config.lr * schedule(step))  # a numpy float would not load with weights_only
            if world > 1:  # each process embeds its slice; the loss sees every pair of the whole batch
                per = -(-len(x) // world)  # all_gather needs equal slices: the last ones are padded
                mine = x[rank * per: (rank + 1) * per]
                mine = torch.cat([mine, x[: per - len(mine)]])  # padding rows, dropped after the gather
                log_p = torch.cat(torch.distributed.nn.functional.all_gather(model(mine.to(device))))[: len(x)]
            elif teacher is not None:
                log_p, embedding = encoder.forward_and_embed(x.to(device))
            else:
                log_p = model(x.to(device))
            loss, stats = kl_hinge_loss(log_p, labels.to(device), config.margin)
            if teacher is not None:
                taught = relational_loss(embedding, teacher(heard).to(device))
                loss = loss + config.distill * taught
                stats["distill"] = taught.item()
            optimizer.zero_grad(set_to_none=True)
            # each process computed the whole loss: all_gather's backward sums the processes' gradients for
            # this slice (world x the true one), and DDP's average over processes divides that back out
            loss.backward()
            whole = False  # a second Ctrl-C from here on stops inside the step: nothing of it is saved
            optimizer.step()
            step += 1
            due = (step % config.val_every == 0 or step == config.steps) and rank == 0
            whole = not due  # a step due for validation is whole once validated and saved
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            hook("step", step=step, total=config.steps, loss=running, **stats)
            if (step % 50 == 0 or step == config.steps) and rank == 0:  # the last step too: a short run has a log
                log({"step": step, "loss": running, **stats, "seconds": time.time() - started})
            if due:
                hook("validating" if val else "calibrating", step=step)  # (without validation: calibration)
                embedded = {}  # this round's window embeddings: the validation set is embedded once
                metrics = evaluate_sets(encoder, val, device, embedded) if val else {}
                try:
                    calibration = calibrate_encoder(encoder, held_out, device, embedded).as_dict()
                except ValueError as e:  # too few speakers: the count must be told, or calibrated later
                    if not uncalibrated:  # said once, not every round
                        hook("warning", message=f"no speaker-count calibration: {e}")
                    calibration, uncalibrated = None, True
                if metrics:
                    log({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})
                    hook("val", step=step, best=min(best_eer, metrics["eer_mean"]), **metrics)
                else:
                    hook("calibrated", step=step)
                if not val or metrics["eer_mean"] < best_eer:
                    best_eer = metrics.get("eer_mean", best_eer)
                    save_checkpoint(out_dir / "best.pt", encoder, step=step, metrics=metrics,
                                    train_config=dataclasses.asdict(config), calibration=calibration)
                checkpoint(metrics)
                whole = True
        if world > 1:
            # drop what holds the process group (DDP, the last step's graph) and meet, so that
            # destroy_process_group shuts gloo down while every process is there; torn down later (when
            # train returns, or at exit) it can hang or abort the process
            model = log_p = loss = None
            torch.distributed.barrier()
    except KeyboardInterrupt:
        if rank == 0 and whole:
            checkpoint(metrics)
        last = out_dir / "last.pt"  # else the last whole step saved, if any: a resume redoes the rest
        raise TrainingInterrupted(last if last.exists() else None, int(stop.signum)) from None
    finally:
        batches.close()
        stop.restore()
        if world > 1:
            torch.distributed.destroy_process_group()
    return {"step": step, "best_eer": best_eer, "metrics": metrics, "out_dir": str(out_dir),
            "seconds": time.time() - started}


def validate(encoder: SpeakerEncoder, data: Dataset, cache_dir: str | Path, device: torch.device,
             per_speaker: int = 20, workers: int = 1, hook: Hook | None = None,
             more: list[tuple[str, Dataset]] = (), rooms: bool = False, clips: Path | None = None,
             noise_dirs: list[Path] = ()) -> dict:
    """The model card's figures on held-out speakers: EER and pair accuracy (cosine, all pairs of at most
    `per_speaker` utterances a speaker), the EER of each further set (held_out_sets: eer_<name>) and their
    mean (eer_mean), the ZHAW misclassification rate (first 8 vs last 2 utterances of 40 speakers, threshold
    chosen on the others) and the encoder's speaker-count calibration read on the same utterances
    ("calibration", a Calibration as a dict)."""
    from .metrics import zhaw_mr

    hook = hook or (lambda *a, **k: None)
    cache = build_cache(data, cache_dir, workers, hook)
    try:
        sets = held_out_sets(data, Path(cache_dir), per_speaker, more, rooms, clips, noise_dirs, workers, hook)
        embedded = {}
        figures = evaluate_sets(encoder, sets, device, embedded)
    except UnscorableSet as e:
        if e.split != "val" or not cache.skipped:
            raise
        # too little was left to measure: the unreadable files are likely why
        raise ValueError(f"{e} ({len(cache.skipped)} of {len(data)} files could not be read: "
                         f"{'; '.join(cache.skipped[:3])}{' ...' if len(cache.skipped) > 3 else ''})") from None
    try:
        figures["calibration"] = calibrate_encoder(encoder, sets[0], device, embedded).as_dict()
    except ValueError as e:
        figures["calibration_skipped"] = str(e)
    utts = [utterance_windows(np.asarray(cache.frames[o: o + n])) for o, n in zip(cache.offsets, cache.lengths)]
    try:
        figures.update(zhaw_mr(utterance_embeddings(encoder, utts, device), cache.speakers))
    except ValueError as e:
        figures["mr_skipped"] = str(e)  # too few speakers for the protocol: EER alone
    figures["skipped"], figures["skipped_files"] = len(cache.skipped), list(cache.skipped)
    return figures
