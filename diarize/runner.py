"""Diarizing many files: in this process, or in a pool of worker processes, one file per task."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator

from .audio import AudioError
from .cluster import NO_CALIBRATION
from .data import ignore_interrupts
from .model import ModelError, load_model
from .pipeline import Diarization, PipelineConfig, as_config, cached_detector, diarize

_worker_model = None


def _init_worker(model: str | None, device: str, threads: int) -> None:
    import torch

    global _worker_model
    ignore_interrupts()
    torch.set_num_threads(threads)
    _worker_model = load_model(model, device)


def _run(path: Path, options: dict) -> tuple[Path, Diarization | str]:
    """A file's result, or the one-line reason it failed: a bad file never stops the batch."""
    try:
        return path, diarize(path, _worker_model, **options)
    except (AudioError, ModelError, ValueError, OSError) as e:
        return path, str(e) if str(path) in str(e) else f"{path}: {e}"
    except Exception as e:  # a failure nobody foresaw still names the file and lets the batch go on
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        return path, f"{path}: unexpected {type(e).__name__}: {reason}"


def diarize_files(files: list[Path], model: str | None, device: str, options: dict,
                  workers: int = 1) -> Iterator[tuple[Path, Diarization | str]]:
    """An iterator of (path, result or error message) for each file, in input order. The model is loaded once
    per process; with workers > 1 each process gets an equal share of the CPU threads. A model (or, with
    overlap handling, the overlap detector) that cannot be loaded, or a model without the calibration an
    estimated count needs, raises ModelError (or ValueError for the device) here, before any file is read."""
    global _worker_model
    _worker_model = load_model(model, device)  # here first: a worker whose initializer fails is respawned forever
    if options.get("num_speakers") is None and _worker_model.calibration is None:  # said once, not per file
        raise ModelError(f"{_worker_model.source}: {NO_CALIBRATION}")
    if as_config(options.get("config", PipelineConfig())).overlap:
        try:
            cached_detector(options.get("overlap_model"))  # the one the files diarized in this process use
        except ModelError as e:
            raise ModelError(f"{e} (overlap detection; --no-overlap goes without)") from None
    return _results(files, model, device, options, workers)


def _results(files: list[Path], model: str | None, device: str, options: dict,
             workers: int) -> Iterator[tuple[Path, Diarization | str]]:
    if workers <= 1 or len(files) <= 1:
        for path in files:
            yield _run(path, options)
        return
    import os

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    pending, width = list(files), min(workers, len(files))
    while pending:
        # a process pool that says when a worker dies (killed, out of memory), where a multiprocessing.Pool
        # would wait for its file for ever
        pool = ProcessPoolExecutor(width, ctx, _init_worker, (model, device, threads))
        try:
            futures = [pool.submit(_run, path, options) for path in pending]
            for i, (path, future) in enumerate(zip(pending, futures)):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    if width == 1:  # one file at a time: it was this one's
                        yield path, f"{path}: the process diarizing it died (killed, or out of memory?)"
                        pending = pending[i + 1:]
                        width = min(workers, len(pending))
                    else:  # whose it was is unknown: the files not yet done go again, one at a time
                        pending, width = pending[i:], 1
                    break
                yield result
            else:
                pending = []
        finally:
            _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for the files in flight (Ctrl-C, SIGTERM, a broken pool)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()  # the workers ignore SIGINT; this ends them at once
    pool.shutdown(wait=True, cancel_futures=True)
