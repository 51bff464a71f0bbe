"""The training loop: siamese KL encoder on S x M batches, validation EER, best/last checkpoints, resume,
and torchrun/DDP when launched with more than one process."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import augment
from .calibration import Calibration, calibrate, piece_embeddings
from .data import BatchSampler, Dataset, FeatureCache, build_cache, utterance_windows
from .hparams import WINDOW_FRAMES
from .loss import kl_hinge_loss
from .metrics import equal_error_rate, pair_scores
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
    augment: bool = False  # synthesise gain, noise, reverberation and speed changes
    seed: int = 0
    val_every: int = 200  # steps between validation rounds (EER) and checkpoints
    val_utterances: int = 20  # at most this many utterances per validation speaker
    val_speakers: int = 0  # speakers of the training data held out for validation: a resume holds out the same


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C/SIGTERM once the last completed step is saved; carries that checkpoint (None if
    there is none yet) and the signal's number."""


class _StopRequest:
    """Ctrl-C or SIGTERM asks the loop to stop after the step in flight, so the checkpoint it leaves is
    exactly a completed step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested, self.saved, self.signum = False, {}, signal.SIGINT
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

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


def validation_windows(cache: FeatureCache, per_speaker: int, seed: int = 0,
                       max_speakers: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Up to `per_speaker` utterances per speaker (of at most `max_speakers`, drawn), as stacks of windows."""
    rng = np.random.default_rng(seed)
    utts, spks = [], []
    speakers = sorted(set(cache.speakers))
    if max_speakers is not None and len(speakers) > max_speakers:
        speakers = sorted(rng.choice(speakers, size=max_speakers, replace=False))
    for spk in speakers:
        idx = [i for i, s in enumerate(cache.speakers) if s == spk]
        for i in sorted(rng.permutation(idx)[:per_speaker]):
            feats = np.asarray(cache.frames[cache.offsets[i]: cache.offsets[i] + cache.lengths[i]])
            utts.append(utterance_windows(feats))
            spks.append(spk)
    return utts, spks


@torch.inference_mode()
def window_embeddings(encoder: SpeakerEncoder, utts: list[np.ndarray], device: torch.device,
                      batch_size: int = 512) -> list[np.ndarray]:
    """The embedding of every window of each utterance: one (windows, D) array per utterance."""
    was_training = encoder.training
    encoder.eval()
    flat = torch.from_numpy(np.concatenate(utts))
    emb = torch.cat([encoder.embed(flat[i: i + batch_size].to(device)).cpu()
                     for i in range(0, len(flat), batch_size)]).numpy()
    encoder.train(was_training)
    return np.split(emb, np.cumsum([len(u) for u in utts])[:-1])


def utterance_embeddings(encoder: SpeakerEncoder, utts: list[np.ndarray], device: torch.device,
                         batch_size: int = 512) -> np.ndarray:
    """Mean of each utterance's window embeddings, L2-normalised."""
    sums = np.stack([w.sum(axis=0) for w in window_embeddings(encoder, utts, device, batch_size)])
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def calibrate_encoder(encoder: SpeakerEncoder, utts: list[np.ndarray], spks: list[str],
                      device: torch.device) -> Calibration:
    """The encoder's calibration (calibration.calibrate) from held-out utterances' windows."""
    return calibrate(piece_embeddings(window_embeddings(encoder, utts, device)), spks)


def evaluate_encoder(encoder: SpeakerEncoder, utts: list[np.ndarray], spks: list[str],
                     device: torch.device) -> dict[str, float]:
    """EER (cosine, all utterance pairs) and balanced same/different pair accuracy at the EER threshold."""
    scores, same = pair_scores(utterance_embeddings(encoder, utts, device), spks)
    eer, threshold = equal_error_rate(scores, same)
    accept = scores >= threshold
    acc = 0.5 * (accept[same].mean() + (~accept[~same]).mean())
    return {"eer": eer, "pair_accuracy": float(acc), "threshold": threshold,
            "utterances": len(utts), "speakers": len(set(spks))}


def train(train_data: Dataset, val_data: Dataset | None, out_dir: str | Path,
          encoder_config: EncoderConfig = EncoderConfig(), config: TrainConfig = TrainConfig(),
          device: torch.device = torch.device("cpu"), resume: str | Path | None = None,
          init: str | Path | None = None, cache_dir: str | Path | None = None, workers: int = 1,
          hook: Hook | None = None) -> dict:
    """Train an encoder; writes out_dir/last.pt (resumable), out_dir/best.pt (best validation EER, weights
    only: a model file) and out_dir/log.jsonl (learning curve). Returns the final summary."""
    hook = hook or (lambda *a, **k: None)
    rank, world = _dist()
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "features"
    train_cache = build_cache(train_data, cache_dir, workers, hook if rank == 0 else None)
    sampler = BatchSampler(train_cache)
    hook("data", speakers=len(sampler.speakers), files=len(train_cache.speakers),
         skipped=train_cache.skipped, dropped=sampler.dropped)
    if len(sampler.speakers) < 2:
        raise ValueError(f"training needs at least 2 speakers with {WINDOW_FRAMES} frames of audio; "
                         f"found {len(sampler.speakers)}")
    val = None
    if val_data is not None and rank == 0:
        val_cache = build_cache(val_data, cache_dir, workers, hook)
        hook("data", split="val", speakers=len(set(val_cache.speakers)), files=len(val_cache.speakers),
             skipped=val_cache.skipped, dropped=[])
        if len(set(val_cache.speakers)) >= 2:
            val = validation_windows(val_cache, config.val_utterances)
    # the speaker-count calibration is read on held-out speakers; a run without any reads it on training ones
    held_out = val if val and len(set(val[1])) >= 5 else validation_windows(train_cache, CALIBRATION_UTTERANCES,
                                                                           max_speakers=CALIBRATION_SPEAKERS)

    step, best_eer, history = 0, float("inf"), []
    if resume:
        ckpt = load_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise ModelError(f"{resume}: holds no training state to resume (use --init to fine-tune from it)")
        encoder = encoder_from_checkpoint(ckpt, resume)
        step, best_eer, history = ckpt["step"], ckpt["best_eer"], list(ckpt["history"])
        config = dataclasses.replace(TrainConfig(**ckpt["train_config"]), steps=config.steps)
        if step >= config.steps:
            raise ValueError(f"{resume} is at step {step} already: give --steps above it to train further")
        if val_data is None and best_eer < float("inf"):  # else best.pt, the validated model, would be overwritten
            raise ValueError(f"{resume}: the run was validated; resume it with the same validation data (--val)")
    elif init:
        encoder = encoder_from_checkpoint(load_checkpoint(init), init)
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
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume and rank == 0:  # the log as of the checkpoint: steps logged after it are redone and logged again
        (out_dir / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))

    def checkpoint(metrics: dict) -> None:
        extra = {"step": step, "best_eer": best_eer, "history": history, "metrics": metrics,
                 "calibration": calibration,
                 "running_loss": running, "train_config": dataclasses.asdict(config),
                 "optimizer": optimizer.state_dict()}
        save_checkpoint(out_dir / "last.pt", encoder, **extra)

    def log(record: dict) -> None:
        history.append(record)
        with open(out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # the logged loss is a running average: a resumed run carries it on, so its log matches an unbroken one
    running, started, metrics = (ckpt.get("running_loss") if resume else None), time.time(), {}
    calibration = ckpt.get("calibration") if resume else None
    stop = _StopRequest()
    whole = True  # weights, optimiser, step count and that step's validation agree: a state to save
    try:
        while step < config.steps:
            if stop.requested:
                raise KeyboardInterrupt
            # every step's randomness derives from (seed, step): a resumed run redraws the same batches
            rng = np.random.default_rng([config.seed, step])
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            torch.manual_seed(config.seed * 1_000_003 + step)
            x, labels = sampler.batch(rng, s, config.windows_per_speaker)
            x = augment(x, gen) if config.augment else x[:, :WINDOW_FRAMES]
            for group in optimizer.param_groups:
                group["lr"] = float(config.lr * schedule(step))  # a numpy float would not load with weights_only
            if world > 1:  # each process embeds its slice; the loss sees every pair of the whole batch
                per = -(-len(x) // world)  # all_gather needs equal slices: the last ones are padded
                mine = x[rank * per: (rank + 1) * per]
                mine = torch.cat([mine, x[: per - len(mine)]])  # padding rows, dropped after the gather
                log_p = torch.cat(torch.distributed.nn.functional.all_gather(model(mine.to(device))))[: len(x)]
            else:
                log_p = model(x.to(device))
            loss, stats = kl_hinge_loss(log_p, labels.to(device), config.margin)
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
            if step % 50 == 0 and rank == 0:
                log({"step": step, "loss": running, **stats, "seconds": time.time() - started})
            if due:
                metrics = evaluate_encoder(encoder, *val, device) if val else {}
                try:
                    calibration = calibrate_encoder(encoder, *held_out, device).as_dict()
                except ValueError as e:  # too few speakers: the count must be told, or calibrated later
                    calibration = None
                    hook("warning", message=f"no speaker-count calibration: {e}")
                if metrics:
                    log({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})
                    hook("val", step=step, best=min(best_eer, metrics["eer"]), **metrics)
                if not val or metrics["eer"] < best_eer:
                    best_eer = metrics.get("eer", best_eer)
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
        stop.restore()
        if world > 1:
            torch.distributed.destroy_process_group()
    return {"step": step, "best_eer": best_eer, "metrics": metrics, "out_dir": str(out_dir),
            "seconds": time.time() - started}


def validate(encoder: SpeakerEncoder, data: Dataset, cache_dir: str | Path, device: torch.device,
             per_speaker: int = 20, workers: int = 1, hook: Hook | None = None) -> dict:
    """The model card's figures on held-out speakers: EER and pair accuracy (cosine, all pairs of at most
    `per_speaker` utterances a speaker), the ZHAW misclassification rate (first 8 vs last 2
    utterances of 40 speakers, threshold chosen on the others) and the encoder's speaker-count
    calibration read on the same utterances ("calibration", a Calibration as a dict)."""
    from .metrics import zhaw_mr

    cache = build_cache(data, cache_dir, workers, hook)
    held_out = validation_windows(cache, per_speaker)
    figures = evaluate_encoder(encoder, *held_out, device)
    try:
        figures["calibration"] = calibrate_encoder(encoder, *held_out, device).as_dict()
    except ValueError as e:
        figures["calibration_skipped"] = str(e)
    utts = [utterance_windows(np.asarray(cache.frames[o: o + n])) for o, n in zip(cache.offsets, cache.lengths)]
    try:
        figures.update(zhaw_mr(utterance_embeddings(encoder, utts, device), cache.speakers))
    except ValueError as e:
        figures["mr_skipped"] = str(e)  # too few speakers for the protocol: EER alone
    figures["skipped"] = len(cache.skipped)
    return figures
