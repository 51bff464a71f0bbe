"""The `diarize` command line: a thin Typer layer over the library; only this module prints."""
from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(
    help="Who spoke when: offline speaker diarization with a siamese KL speaker encoder.\n\n"
         "Example: diarize cluster meeting.wav --out rttm",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit; never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def progress_bar(quiet: bool = False) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                    disable=quiet, transient=False)


@app.callback()
def _root() -> None:
    """Who spoke when: offline speaker diarization with a siamese KL speaker encoder.

    Example: diarize cluster meeting.wav --out rttm
    """


DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder with one subfolder per speaker (files at any depth), "
                                              "or a TSV/CSV manifest with path and speaker columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for last.pt, best.pt, log.jsonl and the "
                                                         "feature cache.")] = Path("runs/encoder"),
    val: Annotated[Optional[Path], typer.Option(help="Validation speakers: a folder or manifest.")] = None,
    val_speakers: Annotated[int, typer.Option(help="Hold out this many speakers of DATA for validation "
                                                    "when --val is not given (0: none).")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps in all.")] = 3000,
    speakers_per_batch: Annotated[int, typer.Option(min=2, help="S: speakers in a batch.")] = 32,
    windows_per_speaker: Annotated[int, typer.Option(min=2, help="M: windows per speaker in a batch.")] = 4,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (cosine-decayed).")] = 1e-3,
    margin: Annotated[float, typer.Option(min=0.0, help="KL hinge margin for different speakers.")] = 2.0,
    lstm_hidden: Annotated[int, typer.Option(min=1, help="Units per direction in each BLSTM.")] = 128,
    dense: Annotated[int, typer.Option(min=1, help="Width of the hidden dense layer.")] = 256,
    outputs: Annotated[int, typer.Option(min=2, help="K: softmax outputs compared by the KL.")] = 256,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.2,
    embedding_layer: Annotated[str, typer.Option(help="Embedding: blstm2 or dense.")] = "blstm2",
    augment: Annotated[bool, typer.Option("--augment/--no-augment",
                                          help="Synthesise gain, noise, reverberation and speed.")] = False,
    val_every: Annotated[int, typer.Option(min=1, help="Steps between validation rounds.")] = 200,
    device: DeviceOpt = "auto",
    resume: Annotated[Optional[Path], typer.Option(help="Continue from a last.pt checkpoint.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this model's weights.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes computing features.")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="Torch CPU threads (0: torch's default).")] = 0,
    cache: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default: OUT/features).")] = None,
) -> None:
    """Train a siamese KL speaker encoder.

    Example: diarize train ~/corpus/train.tsv --val ~/corpus/dev.tsv --out runs/enc --augment
    """
    import torch

    from .data import DataError, list_dataset, split_speakers
    from .model import EncoderConfig, ModelError, pick_device
    from .train import TrainConfig, TrainingInterrupted, train as run_training

    if threads:
        torch.set_num_threads(threads)
    try:
        dev = pick_device(device)
        train_data = list_dataset(data)
        val_data = list_dataset(val) if val else None
        if val_data is None and val_speakers:
            train_data, val_data = split_speakers(train_data, val_speakers, seed)
        enc_cfg = EncoderConfig(lstm_hidden=lstm_hidden, dense=(dense,), n_outputs=outputs, dropout=dropout,
                                embedding_layer=embedding_layer)
        cfg = TrainConfig(steps=steps, speakers_per_batch=speakers_per_batch,
                          windows_per_speaker=windows_per_speaker, lr=lr, margin=margin, augment=augment,
                          seed=seed, val_every=val_every)
    except (DataError, ValueError) as e:
        fail(str(e))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with progress_bar(quiet=not rank0) as bar:
        tasks: dict[str, int] = {}

        def hook(event: str, **info) -> None:
            if event == "features":
                if "features" not in tasks:
                    tasks["features"] = bar.add_task("features", total=info["total"], info="")
                bar.update(tasks["features"], completed=info["completed"], total=info["total"])
                if info["completed"] == info["total"]:
                    bar.remove_task(tasks.pop("features"))
            elif event == "data":
                split = info.get("split", "train")
                console.print(f"{split}: {info['speakers']} speakers, {info['files']} files")
                if info["skipped"]:
                    console.print(f"[yellow]warning:[/] skipped {len(info['skipped'])} unreadable files:")
                    for line in info["skipped"]:
                        console.print(f"  {line}", highlight=False)
                if info["dropped"]:
                    console.print(f"[yellow]warning:[/] dropped {len(info['dropped'])} speakers with less "
                                  f"than one 0.4 s window of audio: {', '.join(info['dropped'])}")
            elif event == "step":
                if "train" not in tasks:
                    tasks["train"] = bar.add_task("train", total=info["total"], info="",
                                                  completed=info["step"] - 1)
                bar.update(tasks["train"], completed=info["step"],
                           info=f"loss {info['loss']:.3f} same {info['same_acc']:.2f} diff {info['diff_acc']:.2f}")
            elif event == "val":
                console.print(f"step {info['step']}: val EER {100 * info['eer']:.2f}% pair acc "
                              f"{info['pair_accuracy']:.3f} (best {100 * info['best']:.2f}%)")

        try:
            summary = run_training(train_data, val_data, out, enc_cfg, cfg, dev, resume, init, cache, workers,
                                   hook)
        except TrainingInterrupted as e:
            console.print(f"interrupted: saved {e.args[0]}; continue with --resume {e.args[0]}")
            raise typer.Exit(130)
        except (DataError, ModelError, ValueError) as e:
            fail(str(e))
    if rank0:
        console.print(f"done: {summary['step']} steps in {summary['seconds']:.0f} s; best val EER "
                      f"{100 * summary['best_eer']:.2f}%; model {out / 'best.pt'}")


def main() -> None:
    app()
