"""The `diarize` command line: a thin Typer layer over the library; only this module prints."""
from __future__ import annotations

import contextlib
import enum
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import Annotated, Iterable, Iterator, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# plain help, as Unix tools print it: rich's boxed tables left the help text a few words a line at 80 columns
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
# no emoji: ":x:" in a file name stays as it is; soft wrap: a message in a log is one line (a path that
# rich broke at 80 columns could not be copied from it)
console = Console(stderr=True, emoji=False, soft_wrap=True)
stdout_console = Console(emoji=False, soft_wrap=True)


def error(message: str) -> None:
    """One `error:` line on stderr; the message (file names, library errors) is printed literally."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_table(out: Console, table) -> None:
    """Print a rich table; into a file or pipe at its natural width (rich's default there, 80 columns, cut
    file names to "room_rir…")."""
    if not out.is_terminal:
        from rich.measure import Measurement

        width = Measurement.get(out, out.options.update(max_width=10 ** 4), table).maximum
        out = Console(file=out.file, width=max(out.width, width), emoji=False)
    out.print(table)


USAGE = 2  # the exit status of a command line that cannot work, as Click gives for its own checks


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit; never a traceback."""
    error(message)
    raise typer.Exit(code)


class LazyProgress(Progress):
    """A Progress drawn from its first task on: a command that fails before it has one leaves its error line
    alone, with no empty bar (a blank line) under it."""

    def __enter__(self) -> LazyProgress:
        return self

    def add_task(self, *args, **kwargs):
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)

    def stop(self) -> None:
        if self.live.is_started:
            super().stop()


def progress_bar(quiet: bool = False) -> Progress:
    # the bar draws on stderr; what goes to stdout stays there unless both are the terminal (--out - | head)
    return LazyProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                    disable=quiet, transient=False, redirect_stdout=sys.stdout.isatty())


def _version(show: bool) -> None:
    if show:
        from . import __version__

        typer.echo(f"diarize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Who spoke when: offline speaker diarization with a siamese KL speaker encoder.

    \b
    Example:
      diarize cluster meeting.wav --out rttm
    """


def _device_named(value: str) -> str:
    """A usage error (exit 2) for a device that no machine has; CUDA missing on this one is found later."""
    from .model import device_name

    try:
        return device_name(value)
    except ValueError as e:
        fail(str(e), USAGE)


def _model_named(value: Optional[str]) -> Optional[str]:
    """A usage error (exit 2) for a model name or path that does not exist; a bad file is found later."""
    from .model import ModelError, resolve_model_path

    try:
        resolve_model_path(value)
    except ModelError as e:
        fail(str(e), USAGE)
    return value


DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", callback=_device_named,
                                        help="auto (CUDA when present), cpu, cuda or cuda:N.")]


# train's options that a run keeps for good: a resume reads them from its checkpoint, --init the architecture
ARCHITECTURE_OPTIONS = ("lstm_hidden", "dense", "outputs", "dropout", "embedding_layer")
RUN_OPTIONS = ARCHITECTURE_OPTIONS + ("speakers_per_batch", "windows_per_speaker", "lr", "margin", "augment",
                                      "augment_clean", "augment_edges", "speed_perturb", "distill", "val_every",
                                      "seed", "val_speakers")
AlsoOpt = Annotated[Optional[list[Path]], typer.Option(
    "--also", metavar="DATA", help="A further held-out set (folder or manifest), measured on its own (repeatable).")]
RoomsOpt = Annotated[bool, typer.Option(help="Also measure the held-out speakers in simulated rooms under "
                                             "noise (a fixed rendering).")]
ClipsOpt = Annotated[Optional[Path], typer.Option(
    metavar="DIR",
    help="Recordings with same-stem RTTMs: also measure same/different EER of 1.2 s pieces inside each.")]
NoiseDirOpt = Annotated[Optional[list[Path]], typer.Option(metavar="DIR",
                                                           help="Noise recordings that speech is put under: "
                                                                "training's --augment, the rooms set of "
                                                                "validation (repeatable).")]
SeedOpt = Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1,
                                      help="Seed of every random choice: one seed, one "
                                           "result.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


class EmbeddingLayer(str, enum.Enum):
    blstm2 = "blstm2"
    dense = "dense"


def named_sets(paths: list[Path]) -> list:
    """(name, Dataset) for each held-out set: named by its file or folder name, which must tell it from the
    others, from the sets named val, rooms and clips, and from the mean."""
    from .data import list_dataset

    names = [p.stem for p in paths]
    for path, name in zip(paths, names):
        if name in ("val", "rooms", "clips", "mean") or names.count(name) > 1:
            fail(f"--also {path}: its figures would be named eer_{name}, as another set's are; give it a file or "
                 f"folder name of its own", USAGE)
        if not path.exists():
            fail(f"--also {path}: no such file or folder", USAGE)
    return [(p.stem, list_dataset(p)) for p in paths]


def given(ctx: typer.Context, *names: str) -> list[str]:
    """The options among `names` typed on the command line (not left at their defaults)."""
    return [n for n in names if ctx.get_parameter_source(n).name == "COMMANDLINE"]


def flags(names: list[str]) -> str:
    return ", ".join(f"--{n.replace('_', '-')}" for n in names)


def resumed_in(ctx: typer.Context, out: Path, resume: Path, run: dict, typed: dict) -> Path:
    """The folder a resumed training run continues in, its own; the options typed that it keeps its own
    settings of (`run`, from its checkpoint) are named in a warning."""
    if given(ctx, "out") and out.resolve() != resume.parent.resolve():
        fail(f"--resume continues the run in {resume.parent}; --out {out} would split it in two", USAGE)
    changed = [n for n in given(ctx, *typed) if n in run and typed[n] != run[n]]
    if changed:
        warn(f"ignored on --resume, the run keeps its own: {flags(changed)}")
    return resume.parent


def refuse_held_run(out: Path, force: bool) -> bool:
    """Whether `out` holds a training run; without --force, an error saying how to go on with it."""
    held = [p for p in (out / "last.pt", out / "best.pt") if p.exists()]
    if held and not force:
        fail(f"{out} holds a training run ({held[0].name}): continue it with --resume {out / 'last.pt'}, "
             f"or start over with --force")
    return bool(held)


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[list[int]]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: files being written are taken back, and a training
    command stopped before its loop takes both signals over (while the data is read) says so instead of
    dying silently. Yields [the signal's number] once one came."""
    import signal

    received = [int(signal.SIGINT)]

    def handle(signum, frame):
        received[0] = signum
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return
    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield received
    finally:
        if signal.getsignal(signal.SIGTERM) is handle:  # stopped() may have set the default: it stays
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def say_while_training(bar, task: int | None, event: str, talk: bool) -> None:
    """A validation round under way shows on the progress bar; the first Ctrl-C is answered at once, since
    the step in flight, with its validation, can take minutes."""
    if event in ("validating", "calibrating", "val", "calibrated") and task is not None:
        bar.update(task, info=event if event in ("validating", "calibrating") else "")
    elif event == "stopping" and talk:
        console.print("stopping after the step in flight (and its validation, if due); Ctrl-C again stops at "
                      "once", highlight=False)


INTERRUPTION_SAID = []  # a command that says how it was stopped (training: where to resume) notes it here


def not_begun(resume: Path | None, signum: int, note: str = "") -> NoReturn:
    """A training run stopped before its first step: say so, with the shell's code for that signal."""
    where = f"continue with --resume {escape(str(resume))}" if resume else "nothing to resume"
    console.print(f"interrupted before training began: {where}{escape(note)}")
    INTERRUPTION_SAID.append(signum)
    raise typer.Exit(128 + signum)


def check_folders(**folders: Path | None) -> None:
    """Fail naming the option (`out` for --out) whose folder could not be written."""
    for name, folder in folders.items():
        problem = folder and folder_problem(folder)
        if problem:
            fail(f"--{name} {folder}: cannot write: {problem}")


def resumed_steps(ctx: typer.Context, steps: int, run: dict, resume: Path) -> int:
    """A resumed run's length: its own, or a longer one given with --steps (a shorter one would change its
    learning-rate schedule half-way)."""
    own = run.get("steps", steps)
    if not given(ctx, "steps"):  # the run's own length, not the default
        return own
    if steps < own:
        fail(f"--steps {steps}: {resume} is a run of {own} steps; a resumed run keeps its length or is made "
             f"longer", USAGE)
    return steps


def check_sources(**folders: list[Path] | None) -> None:
    """Fail naming the option (`rir_dir` for --rir-dir) whose folder to read from is not there."""
    for name, paths in folders.items():
        for folder in paths or ():
            if not folder.is_dir():
                fail(f"--{name.replace('_', '-')} {folder}: {'not a folder' if folder.exists() else 'no such folder'}",
                     USAGE)


def stopped(last: Path | None, signum: int) -> NoReturn:
    """A training run stopped by Ctrl-C or SIGTERM after its last whole step: say where it can go on."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):  # the run is saved: another Ctrl-C ends the process at once
        signal.signal(sig, signal.SIG_DFL)
    console.print(f"interrupted: {escape(str(last))} holds the last whole step; continue with --resume "
                  f"{escape(str(last))}" if last
                  else "interrupted before the first checkpoint: nothing to resume")
    INTERRUPTION_SAID.append(signum)
    raise typer.Exit(128 + signum)  # the shell's code for death by that signal: 130, 143


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(
        metavar="DATA", help="Folder with one subfolder per speaker (files at any depth), or a TSV/CSV manifest "
                             "with path and speaker columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Folder for last.pt, best.pt, log.jsonl and the "
                                           "feature cache.")] = Path("runs/encoder"),
    val: Annotated[Optional[Path], typer.Option(metavar="DATA",
                                                help="Validation speakers: a folder or manifest.")] = None,
    val_speakers: Annotated[int, typer.Option(metavar="N", min=0,
                                              help="Hold out this many speakers of DATA for validation "
                                                   "when --val is not given (0: none).")] = 0,
    steps: Annotated[int, typer.Option(metavar="N", min=1, help="Optimiser steps in all.")] = 3000,
    speakers_per_batch: Annotated[int, typer.Option(metavar="S", min=2, help="S: speakers in a batch.")] = 32,
    windows_per_speaker: Annotated[int, typer.Option(metavar="M", min=2,
                                                     help="M: windows per speaker in a batch.")] = 4,
    lr: Annotated[float, typer.Option(metavar="LR", min=1e-7, help="Adam learning rate (cosine-decayed).")] = 1e-3,
    margin: Annotated[float, typer.Option(metavar="NATS", min=0.0,
                                          help="KL hinge margin for different speakers.")] = 2.0,
    lstm_hidden: Annotated[int, typer.Option(metavar="N", min=1, help="Units per direction in each BLSTM.")] = 128,
    dense: Annotated[int, typer.Option(metavar="N", min=1, help="Width of the hidden dense layer.")] = 256,
    outputs: Annotated[int, typer.Option(metavar="K", min=2, help="K: softmax outputs compared by the KL.")] = 256,
    dropout: Annotated[float, typer.Option(metavar="P", min=0.0, max=0.9,
                                           help="Dropout between and after the BLSTM layers.")] = 0.2,
    embedding_layer: Annotated[EmbeddingLayer, typer.Option(help="The inner layer used as the embedding: the "
                                                                  "second BLSTM's time average, or the dense "
                                                                  "layer.")] = EmbeddingLayer.blstm2,
    augment: Annotated[bool, typer.Option("--augment/--no-augment",
                                          help="Put the speech in simulated and --rir-dir rooms, noise "
                                               "(--noise-dir, coloured, babble), band limits, equalisers "
                                               "and gains; a batch's speakers share rooms.")] = False,
    augment_clean: Annotated[float, typer.Option(metavar="SHARE", min=0.0, max=1.0,
                                                 help="With --augment: the share of a batch's "
                                                      "conditions left clean.")] = 0.75,
    augment_edges: Annotated[float, typer.Option(metavar="SHARE", min=0.0, max=1.0,
                                                 help="With --augment: the share of windows "
                                                      "cut at an utterance's start or end (10-50% silence).")] = 0.5,
    speed_perturb: Annotated[bool, typer.Option("--speed-perturb/--no-speed-perturb",
                                                help="Every speaker also at 0.9x and 1.1x speed, as two "
                                                     "more speakers.")] = False,
    rir_dir: Annotated[Optional[list[Path]], typer.Option(metavar="DIR",
                                                          help="Impulse responses for --augment (repeatable).")] = None,
    distill: Annotated[float, typer.Option(metavar="WEIGHT", min=0.0,
                                           help="Weight of a term matching the batch's similarities "
                                                "to Resemblyzer's (pip install -e '.[distill]'; needs "
                                                "--augment or --speed-perturb; 0: none).")] = 0.0,
    noise_dir: NoiseDirOpt = None,
    also: AlsoOpt = None,
    val_rooms: RoomsOpt = False,
    val_clips: ClipsOpt = None,
    val_every: Annotated[int, typer.Option(metavar="N", min=1, help="Steps between validation rounds.")] = 200,
    device: DeviceOpt = "auto",
    resume: Annotated[Optional[Path], typer.Option(
        metavar="CHECKPOINT",
        help="Continue from a last.pt checkpoint, to the run's own --steps unless --steps raises it.")] = None,
    init: Annotated[Optional[Path], typer.Option(metavar="MODEL",
                                                 help="Fine-tune: start from this model's weights.")] = None,
    seed: SeedOpt = 0,
    workers: Annotated[int, typer.Option(metavar="N", min=1,
                                         help="Processes computing features, then drawing (and augmenting) "
                                              "batches ahead of the training step.")] = 1,
    threads: Annotated[int, typer.Option(metavar="N", min=0, help="Torch CPU threads (0: torch's default).")] = 0,
    cache: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                                  help="Feature cache folder (default: OUT/features).")] = None,
    force: StartOverOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, validation lines or summary "
                                                             "(warnings and errors still).")] = False,
) -> None:
    """Train a siamese KL speaker encoder.

    \b
    Example:
      diarize train ~/corpus/train.tsv --val ~/corpus/dev.tsv --out runs/enc --augment
    """
    import torch

    from .data import DataError, list_dataset, split_speakers
    from .model import EncoderConfig, ModelError, load_checkpoint, pick_device, resolve_model_path
    from .train import RunRefused, TrainConfig, TrainingInterrupted, WorkerDied, train as run_training

    if threads:
        torch.set_num_threads(threads)
    if resume and init:
        fail("give --resume (continue a run) or --init (start one from a model's weights), not both", USAGE)
    try:
        if init:
            init = resolve_model_path(init)  # a name in models/ or a path, checked before any work
            started_from = load_checkpoint(init).get("config", {})
        if resume:
            ckpt = load_checkpoint(resume)
            if ckpt.get("kind") == "overlap" or "optimizer" not in ckpt:
                fail(f"{resume}: holds no speaker-encoder training run to resume (a run's last.pt does)", USAGE)
    except ModelError as e:
        fail(str(e), USAGE)
    typed = dict(lstm_hidden=lstm_hidden, dense=[dense], outputs=outputs, dropout=dropout,
                 embedding_layer=embedding_layer.value, speakers_per_batch=speakers_per_batch,
                 windows_per_speaker=windows_per_speaker, lr=lr, margin=margin, augment=augment,
                 augment_clean=augment_clean, augment_edges=augment_edges, speed_perturb=speed_perturb,
                 distill=distill, val_every=val_every, seed=seed, val_speakers=val_speakers)
    if resume:
        # a resumed run continues in its own folder with its own settings and validation speakers
        run = {**ckpt.get("config", {}), **ckpt.get("train_config", {})}
        run["outputs"], run["dense"] = run.get("n_outputs"), list(run.get("dense", ()))[:1]
        out = resumed_in(ctx, out, resume, run, typed)
        val_speakers, seed = run.get("val_speakers", val_speakers), run.get("seed", seed)
        steps = resumed_steps(ctx, steps, run, resume)
    elif init:
        kept = {**started_from, "outputs": started_from.get("n_outputs"),
                "dense": list(started_from.get("dense", ()))[:1]}
        changed = [n for n in given(ctx, *ARCHITECTURE_OPTIONS) if typed[n] != kept.get(n)]
        if changed:  # (ones that agree with the model are no news)
            warn(f"ignored with --init, the model's architecture is kept: {flags(changed)}")
    unused = [*(given(ctx, "rir_dir", "augment_clean", "augment_edges") if not augment else []),
              *(given(ctx, "noise_dir") if not augment and not val_rooms else []),
              *(given(ctx, "val_rooms") if not val and not val_speakers else []),
              *(given(ctx, "val_speakers") if val else []), *(given(ctx, "force") if resume else [])]
    if unused:
        warn(f"not used: {flags(unused)} (see diarize train --help)")
    if val and data.resolve() == val.resolve():
        warn(f"--val {val} is DATA itself: validated on the training speakers, the EER says little")
    if val and not val.exists():
        fail(f"--val {val}: no such file or folder", USAGE)
    check_folders(out=out, cache=cache)
    check_sources(rir_dir=rir_dir, noise_dir=noise_dir, val_clips=[val_clips] if val_clips else None)
    held = not resume and refuse_held_run(out, force)
    try:
        dev = pick_device(device)
        train_data = list_dataset(data)
        val_data = list_dataset(val) if val else None
        if val_data is None and val_speakers:
            try:
                train_data, val_data = split_speakers(train_data, val_speakers, seed)
            except DataError as e:  # the command line asks for what the data cannot give
                fail(str(e), USAGE)
        enc_cfg = EncoderConfig(lstm_hidden=lstm_hidden, dense=(dense,), n_outputs=outputs, dropout=dropout,
                                embedding_layer=embedding_layer.value)
        cfg = TrainConfig(steps=steps, speakers_per_batch=speakers_per_batch,
                          windows_per_speaker=windows_per_speaker, lr=lr, margin=margin, augment=augment,
                          augment_clean=augment_clean, augment_edges=augment_edges, speed_perturb=speed_perturb,
                          distill=distill, rir_dirs=tuple(map(str, rir_dir or ())),
                          noise_dirs=tuple(map(str, noise_dir or ())),
                          seed=seed, val_every=val_every, val_speakers=val_speakers if val_data else 0)
        more_val = named_sets(also or [])
    except (DataError, ValueError) as e:
        fail(str(e))
    if val and data.resolve() != val.resolve():  # a folder and a manifest of the same files, or sets sharing some
        shared = {p.resolve() for p in train_data.paths} & {p.resolve() for p in val_data.paths}
        if shared:
            warn(f"--val {val}: {len(shared)} of its {len(val_data)} files are also in DATA: validated on "
                 f"training speakers, the EER says little")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    talk = rank0 and not quiet  # under torchrun, one process speaks
    with progress_bar(quiet=not talk) as bar, terminated_as_interrupted() as signum:
        tasks: dict[str, int] = {}

        def hook(event: str, **info) -> None:
            if event == "begin" and not resume:  # a new run, every check passed: nothing of an old one (a
                for name in ("last.pt", "best.pt", "log.jsonl"):  # run replaced, or one that failed) is mixed in
                    (out / name).unlink(missing_ok=True)
            elif event == "features":
                if "features" not in tasks:
                    tasks["features"] = bar.add_task("features", total=info["total"], info="")
                bar.update(tasks["features"], completed=info["completed"], total=info["total"])
                if info["completed"] == info["total"]:
                    bar.remove_task(tasks.pop("features"))
            elif event == "data" and rank0:
                split = info.get("split", "train")
                if talk:
                    console.print(f"{split}: {info['speakers']} speakers, {info['files']} files")
                if info["skipped"]:
                    console.print(f"[yellow]warning:[/] skipped {len(info['skipped'])} unreadable file(s):")
                    for line in info["skipped"]:
                        console.print(f"  {escape(line)}", highlight=False)
                if info["dropped"]:
                    n = len(info["dropped"])
                    console.print(f"[yellow]warning:[/] dropped {n} speaker{'s' * (n != 1)} with less "
                                  f"than one 0.4 s window of audio: {', '.join(info['dropped'])}")
            elif event == "step":
                if "train" not in tasks:
                    tasks["train"] = bar.add_task("train", total=info["total"], info="",
                                                  completed=info["step"] - 1)
                bar.update(tasks["train"], completed=info["step"],
                           info=f"loss {info['loss']:.3f} same {info['same_acc']:.2f} diff {info['diff_acc']:.2f}")
            elif event == "warning" and rank0:
                warn(info["message"])
            elif event in ("validating", "calibrating", "calibrated", "stopping"):
                say_while_training(bar, tasks.get("train"), event, talk)
            elif event == "val" and talk:
                say_while_training(bar, tasks.get("train"), event, talk)
                sets = {k[4:]: v for k, v in info.items() if k.startswith("eer_") and k != "eer_mean"}
                each = ", ".join(f"{name} {100 * eer:.2f}" for name, eer in sets.items())
                each = f" ({each})" if len(sets) > 1 else ""
                what = "mean EER" if len(sets) > 1 else "val EER"  # the mean is what best.pt is chosen by
                console.print(f"step {info['step']}: {what} {100 * info['eer_mean']:.2f}%{each} pair acc "
                              f"{info['pair_accuracy']:.3f} (best {100 * info['best']:.2f}%)")

        try:
            summary = run_training(train_data, val_data, out, enc_cfg, cfg, dev, resume, init, cache, workers,
                                   hook, more_val, val_rooms, val_clips)
        except TrainingInterrupted as e:
            stopped(*e.args)
        except KeyboardInterrupt:  # before the first step: while reading the data or building its cache
            not_begun(resume, signum[0], " (a partly built feature cache is not kept)")
        except RunRefused as e:
            fail(str(e), USAGE)
        except (DataError, ModelError, ValueError, WorkerDied) as e:
            fail(str(e))
        except OSError as e:
            fail(f"{e.filename}: {e.strerror}")
    if talk:
        best = summary["best_eer"]
        several = sum(k.startswith("eer_") and k != "eer_mean" for k in summary["metrics"]) > 1
        figure = (f"best {'mean' if several else 'val'} EER {100 * best:.2f}%" if best < float("inf")
                  else "no validation")
        taken = summary["step"]
        console.print(f"done: {taken} step{'s' * (taken != 1)} in {summary['seconds']:.0f} s; {figure}; "
                      f"model {escape(str(out / 'best.pt'))}")
    if rank0 and (out / "best.pt").exists():  # a warning: said under --quiet too
        from .model import load_checkpoint

        calibration = load_checkpoint(out / "best.pt").get("calibration")
        if calibration:
            warn_few_speakers(calibration["speakers"])


def warn_few_speakers(speakers: int) -> None:
    """A word when a model's speaker-count calibration was read on few held-out speakers."""
    from .calibration import FEW_SPEAKERS

    if speakers < FEW_SPEAKERS:
        warn(f"the speaker-count calibration was read on only {speakers} speakers: read on 10 of 63, "
             f"it moved DER by up to 1.2 points; validate on {FEW_SPEAKERS} or more if you can "
             f"(diarize validate DATA --calibrate)")


@app.command("train-overlap")
def train_overlap(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Argument(
        metavar="DATA", help="Folders of recordings with same-stem reference RTTMs (e.g. simulated "
                             "conversations with overlap).")],
    val: Annotated[list[Path], typer.Option(metavar="DIR",
                                            help="Validation recordings with RTTMs: a folder (repeatable).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="DIR", help="Folder for best.pt, last.pt and log.jsonl.")] = Path("runs/overlap"),
    steps: Annotated[int, typer.Option(metavar="N", min=1, help="Optimiser steps in all.")] = 3000,
    batch: Annotated[int, typer.Option(metavar="N", min=1, help="8 s chunks a step.")] = 32,
    lr: Annotated[float, typer.Option(metavar="LR", min=1e-7, help="Adam learning rate (cosine-decayed).")] = 2e-3,
    val_every: Annotated[int, typer.Option(metavar="N", min=1, help="Steps between validation rounds.")] = 250,
    seed: SeedOpt = 0,
    resume: Annotated[Optional[Path], typer.Option(
        metavar="CHECKPOINT",
        help="Continue from a last.pt checkpoint, to the run's own --steps unless --steps raises it.")] = None,
    threads: Annotated[int, typer.Option(metavar="N", min=0, help="Torch CPU threads (0: torch's default).")] = 0,
    force: StartOverOpt = False,
) -> None:
    """Train the overlapped-speech detector: non-speech, one speaker or overlap for every 20 ms. best.pt is the
    step of best overlap F1 on --val, stored with that F1's threshold raised until 3/4 of the frames it marks
    there are overlapped; last.pt (each validation round, Ctrl-C and SIGTERM) continues with --resume.

    \b
    Example:
      diarize train-overlap sims/train --val sims/val --out runs/overlap
    """
    import torch

    from .model import ModelError, load_checkpoint
    from .overlap import OverlapTrainConfig, train_detector
    from .train import TrainingInterrupted

    if threads:
        torch.set_num_threads(threads)
    if resume:
        try:
            ckpt = load_checkpoint(resume)
        except ModelError as e:
            fail(str(e), USAGE)
        if ckpt.get("kind") != "overlap" or "optimizer" not in ckpt:
            fail(f"{resume}: holds no overlap-detector training run to resume (a run's last.pt does)", USAGE)
        # a resumed run continues in its own folder, with its own settings
        run = ckpt["train_config"]
        out = resumed_in(ctx, out, resume, run, {"batch": batch, "lr": lr, "seed": seed, "val_every": val_every})
        steps = resumed_steps(ctx, steps, run, resume)
    shared = sorted({str(v) for v in val for d in data if v.resolve() == d.resolve()})
    if shared:
        warn(f"--val {', '.join(shared)} is also DATA: validated on recordings it trains on, the F1 and the "
             f"threshold say little")
    check_folders(out=out)
    if not resume:
        refuse_held_run(out, force)  # with --force, the run there is replaced once the recordings are read
    with progress_bar() as bar, terminated_as_interrupted() as signum:
        tasks: dict[str, int] = {}

        def hook(event: str, **info) -> None:
            name = "features" if event == "features" else "train"
            if event in ("features", "step"):
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=info["total"], info="")
                done = info["completed"] if event == "features" else info["step"]
                bar.update(tasks[name], completed=done, info=f"loss {info['loss']:.3f}" if "loss" in info else "")
                if event == "features" and done == info["total"]:
                    bar.remove_task(tasks.pop(name))
            elif event in ("validating", "stopping"):
                say_while_training(bar, tasks.get("train"), event, True)
            elif event == "val":
                say_while_training(bar, tasks.get("train"), event, True)
                working = (f"; at {info['threshold']:.2f} precision {info['threshold_precision']:.3f}, recall "
                           f"{info['threshold_recall']:.3f}" if info["threshold"] != info["f1_threshold"] else "")
                console.print(f"step {info['step']}: overlap F1 {info['f1']:.3f} (precision "
                              f"{info['f1_precision']:.3f}, recall {info['f1_recall']:.3f} at "
                              f"{info['f1_threshold']:.2f}){working}")

        try:
            best = train_detector(data, val, out, OverlapTrainConfig(steps, batch, lr, seed, val_every), hook,
                                  resume)
        except TrainingInterrupted as e:
            stopped(*e.args)
        except KeyboardInterrupt:  # while reading the recordings
            not_begun(resume, signum[0])
        except (ModelError, ValueError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"{e.filename}: {e.strerror}")
    console.print(f"done: best overlap F1 {best['f1']:.3f} at step {best['step']}; "
                  f"model {escape(str(out / 'best.pt'))}")


class VAD(str, enum.Enum):
    silero = "silero"
    energy = "energy"


class Method(str, enum.Enum):
    ahc = "ahc"
    hdbscan = "hdbscan"


class Level(str, enum.Enum):
    window = "window"
    segment = "segment"
    speaker = "speaker"
    file = "file"


NumSpeakersOpt = Annotated[Optional[int], typer.Option(
    metavar="N", min=1, help="Exactly this many speakers (fewer, with a warning, where one is left without speech "
                             "of its own).")]
MinSpeakersOpt = Annotated[int, typer.Option(metavar="N", min=1, help="At least this many speakers.")]
MaxSpeakersOpt = Annotated[Optional[int], typer.Option(metavar="N", min=1, help="At most this many speakers.")]
VadOpt = Annotated[VAD, typer.Option(help="Speech detector: silero (silero-vad) or energy (faster, for clean audio).")]
ClusterOpt = Annotated[Method, typer.Option("--cluster", help="Clustering when the count is estimated, with the "
                                                              "model's calibration.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", callback=_model_named,
                                                  help="Model name in models/ or a .pt path (default: the "
                                                       "bundled model).")]
OverlapOpt = Annotated[bool, typer.Option("--overlap/--no-overlap",
                                          help="Give overlapped speech a second speaker, found by the bundled "
                                               "detector (--no-overlap: one speaker at a time, a little "
                                               "faster).")]
OverlapModelOpt = Annotated[Optional[Path], typer.Option(
    metavar="PATH", help="Overlap detector to use, e.g. a train-overlap run's best.pt (default: the bundled one).")]
BatchOpt = Annotated[int, typer.Option(metavar="N", min=1, help="Windows per forward pass.")]
HopOpt = Annotated[float, typer.Option(metavar="SECONDS", min=0.01, max=0.4,
                                       help="Seconds between window starts (at most the "
                                            "0.4 s window).")]


def audio_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, and the audio files inside any folder (recursively, sorted)."""
    from .audio import audio_files_in

    out = []
    for p in paths:
        if p.is_dir():
            found = audio_files_in(p)
            if not found:
                fail(f"{p}: no audio files in this folder")
            out += found
        else:
            out.append(p)
    seen: set[str] = set()  # a file named twice (or also inside a folder given) is diarized once
    return [p for p in out if not (os.path.abspath(p) in seen or seen.add(os.path.abspath(p)))]


def output_targets(audio: Path, out: str, out_dir: Path) -> list[tuple[str, str]]:
    """(path or "-", format) pairs that one input's turns are written to."""
    from .writers import FORMATS

    if out == "-":
        return [("-", "rttm")]
    if out.lower() in (*FORMATS, "all"):
        out = out.lower()
    if out == "all":
        return [(str(out_dir / f"{audio.stem}.{f}"), f) for f in FORMATS]
    if out in FORMATS:
        return [(str(out_dir / f"{audio.stem}.{out}"), out)]
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        fail(f"--out {out!r}: give a format ({', '.join(FORMATS)}, all), a path ending in one, or -", USAGE)
    return [(out, fmt)]


def unique_targets(targets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each output once, however it is spelt (`-o rttm -o ./a.rttm` name one file)."""
    seen, out = set(), []
    for path, fmt in targets:
        key = path if path == "-" else os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.append((path, fmt))
    return out


def check_counts(num_speakers: Optional[int], min_speakers: int, max_speakers: Optional[int]) -> None:
    """The speaker-count options agree, or a usage error naming them as flags."""
    from .pipeline import check_speaker_counts

    try:
        check_speaker_counts(num_speakers, min_speakers, max_speakers)
    except ValueError as e:
        fail(re.sub(r"\b(num|min|max)_speakers\b", r"--\1-speakers", str(e)), USAGE)


def plot_target(plot: Path, stem: str, several: bool) -> Path:
    """The timeline PNG of one input: PLOT itself, or PLOT with "-<stem>" appended when there are several."""
    return plot.with_name(f"{plot.stem}-{stem}{plot.suffix}") if several else plot


def check_outputs(targets: dict[Path, list[str]], force: bool, skip_existing: bool = False) -> list[Path]:
    """Before any work: every input writes different files, each can be written (missing folders are
    created when it is), and none exists unless `force`; with `skip_existing`, the inputs whose outputs all
    exist are left out (an interrupted batch carries on). Returns the inputs to diarize."""
    seen: dict[str, Path] = {}  # absolute output path -> the input writing it
    existing: dict[Path, list[str]] = {}
    for source, paths in targets.items():
        for p in paths:
            if p == "-":
                continue
            key = os.path.abspath(p)
            if key in seen:
                fail(f"{seen[key]} and {source} would both write {p}; give them separate runs or --out-dir "
                     f"folders", USAGE)
            seen[key] = source
            check_writable(Path(p))
            if Path(p).exists():
                existing.setdefault(source, []).append(p)
    done = [f for f, paths in targets.items() if left_as_done(paths)]
    if skip_existing:
        existing = {f: paths for f, paths in existing.items() if f not in done}
    if existing and not force:
        clashes = [p for paths in existing.values() for p in paths]
        which = (f"{clashes[0]} and {len(clashes) - 1} more outputs exist" if len(clashes) > 1
                 else f"{clashes[0]} exists")
        if not skip_existing:
            fail(f"{which}; use --force to overwrite, or --skip-existing to keep whole ones")
        why = " (--skip-existing keeps no input whose turns go to stdout)"
        fail(f"{which}; use --force to overwrite{why if any('-' in targets[f] for f in existing) else ''}")
    return [f for f in targets if not (skip_existing and f in done)]


def left_as_done(paths: list[str]) -> bool:
    """Whether --skip-existing leaves an input out: all its outputs exist. One that also writes to stdout
    is never done: its turns are wanted there again."""
    return "-" not in paths and all(Path(p).exists() for p in paths)


def read_problem(e: OSError) -> str:
    """An unreadable input, worded as the audio inputs' errors are."""
    return f"{e.filename}: no such file" if isinstance(e, FileNotFoundError) else f"{e.filename}: cannot read ({e.strerror})"


def check_writable(path: Path) -> None:
    """Fail naming `path` unless it could be written: its nearest existing folder must be a writable
    folder (the missing ones below it are created when the file is written)."""
    if path.is_dir():
        fail(f"{path}: cannot write: it is a folder")
    problem = folder_problem(path.absolute().parent)
    if problem:
        fail(f"{path}: cannot write: {problem}")


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be written in or created (a file in its place or above it, no permission), or None."""
    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in {folder}"
    return None


def check_target(path: Path, force: bool) -> None:
    """Before any work: `path` can be written, and it does not exist unless `force`."""
    check_writable(path)
    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite")


def check_json_target(path: Optional[Path], force: bool) -> bool:
    """Before any work: --json's file can be written (see check_target); True when it is - (stdout)."""
    if path is not None and str(path) == "-":
        return True
    if path is not None:
        check_target(path, force)
    return False


def write_json(path: Path, data) -> None:
    """`data` as JSON to `path`, atomically, or to stdout when `path` is -."""
    import json

    from .writers import atomic_write

    if str(path) == "-":
        typer.echo(json.dumps(data, indent=1))
        return
    try:
        with atomic_write(path) as f:
            json.dump(data, f, indent=1)
    except OSError as e:
        fail(f"{path}: cannot write ({e.strerror})")


ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
StartOverOpt = Annotated[bool, typer.Option("--force", "-f", help="Start over in an OUT that holds a run.")]


@app.command()
def cluster(
    audio: Annotated[list[Path], typer.Argument(metavar="AUDIO", help="Audio files or folders of them.")],
    out: Annotated[list[str], typer.Option("--out", "-o", metavar="FORMAT",
                                           help="rttm, json, csv, srt or all (each written as STEM.FORMAT in "
                                                "--out-dir), a path whose suffix names the format, or - for "
                                                "RTTM on stdout; repeatable (-o rttm -o json).")] = ["rttm"],
    out_dir: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                                    help="Folder for outputs named after each input (created "
                                                         "when missing; default: the current folder).")] = None,
    num_speakers: NumSpeakersOpt = None,
    min_speakers: MinSpeakersOpt = 1,
    max_speakers: MaxSpeakersOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    vad: VadOpt = VAD.silero,
    method: ClusterOpt = Method.ahc,
    window_hop: HopOpt = 0.2,
    overlap: OverlapOpt = True,
    overlap_model: OverlapModelOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 256,
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Files diarized in parallel processes.")] = 1,
    force: ForceOpt = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave out the inputs whose outputs all exist (to carry on with an interrupted "
                                "batch; with --force, the inputs written in part are redone).")] = False,
    plot: Annotated[Optional[Path], typer.Option(metavar="PNG", help="Draw a timeline PNG (one per input: -STEM is "
                                                                     "appended when there are several).")] = None,
    ref: Annotated[Optional[Path], typer.Option(metavar="RTTM",
                                                help="Reference RTTM (file or folder): drawn in the plot and "
                                                     "scored (DER at collar 0).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Find who spoke when and write speaker turns.

    Each output is written whole or not at all. A file that cannot be read is reported and the others
    are still diarized; the exit status is then 1. A recording without speech gets a warning and an
    empty output.

    \b
    Example:
      diarize cluster meeting.wav --out rttm --plot timeline.png
    """
    from .pipeline import PipelineConfig

    check_counts(num_speakers, min_speakers, max_speakers)
    outs = list(dict.fromkeys(out))  # each once, in the order given
    paths = [o for o in outs if o != "-" and Path(o).suffix]  # outputs named as files, not formats
    if out_dir is not None and str(out_dir) == "-":
        fail("--out-dir -: give a folder (--out - writes RTTM to stdout)", USAGE)
    if out_dir is not None and all(o == "-" or o in paths for o in outs):
        warn(f"--out-dir {out_dir} is not used: --out {' '.join(outs)} names where the turns go")
    out_dir = out_dir or Path(".")
    files = audio_inputs(audio)
    if len(files) > 1 and paths:
        fail("--out names one file but several inputs were given: use a format and --out-dir", USAGE)
    targets = {f: unique_targets(t for o in outs for t in output_targets(f, o, out_dir)) for f in files}
    if plot and plot.suffix.lower() != ".png":
        fail(f"--plot {plot}: the timeline is a PNG: give a path ending in .png", USAGE)
    plots = {f: plot_target(plot, f.stem, len(files) > 1) for f in files} if plot else {}
    if "-" in outs:  # one stream: two recordings under one file id could not be told apart in it
        from .writers import rttm_id

        ids: dict[str, Path] = {}
        for f in files:
            if rttm_id(f.stem) in ids:
                fail(f"{ids[rttm_id(f.stem)]} and {f} would both be file id {rttm_id(f.stem)} in --out -; "
                     f"give them separate runs", USAGE)
            ids[rttm_id(f.stem)] = f
    outputs = {f: [p for p, _ in targets[f]] + ([str(plots[f])] if plot else []) for f in files}
    if skip_existing and all(p == "-" for written in outputs.values() for p in written):
        warn("--skip-existing is not used: every output goes to stdout, which is never skipped")
    if ref:
        read = {os.path.realpath(p) for p in (ref.glob("*.rttm") if ref.is_dir() else [ref])}
        for f in files:
            if skip_existing and left_as_done(outputs[f]):
                continue  # nothing of it is written
            for p in [p for p, _ in targets[f] if p != "-"]:
                if os.path.realpath(p) in read:
                    fail(f"{p} is read as --ref and would be overwritten by the turns found: write them "
                         f"elsewhere (--out-dir)", USAGE)
    given = len(files)
    files = check_outputs(outputs, force, skip_existing)
    if len(files) < given and not quiet:
        console.print(f"skipping {given - len(files)} of {given} inputs, whose outputs exist"
                      + ("" if files else ": nothing to do"))
    if not files:
        return
    references = _load_references(ref) if ref else {}
    if overlap_model and not overlap:
        warn("not used: --overlap-model (with --no-overlap)")
    config = PipelineConfig(window_hop=window_hop, vad=vad.value, cluster=method.value, batch_size=batch_size,
                            overlap=overlap)
    options = dict(num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                   config=config, seed=seed, overlap_model=overlap_model)
    from .model import ModelError
    from .runner import diarize_files
    from .writers import rttm_id

    failures, rows = 0, []
    try:
        results = diarize_files(files, model, device, options, workers)
    except (ModelError, ValueError) as e:
        fail(str(e))
    with progress_bar(quiet) as bar:
        task = bar.add_task("diarize", total=len(files), info="")
        for path, result in results:
            bar.update(task, advance=1, info=escape(path.name))
            if isinstance(result, str):
                failures += 1
                error(result)
                continue
            for w in result.warnings:
                warn(w)
            if references and rttm_id(result.file_id) not in references:
                warn(f"{path}: --ref has no turns of file id {rttm_id(result.file_id)}: not scored")
            problem = _write_outputs(result, targets[path], plots.get(path), references)
            if problem:
                failures += 1
                error(f"{path}: {problem}")
                continue
            rows.append((path, result))
    if not quiet and rows:
        _summary(rows, references)
    if failures:
        fail(f"{failures} of {len(files)} files failed")


def load_rttms_warning(path: Path, named: str) -> dict:
    """evaluate.load_rttms, with a warning for each file id whose files give it different turns (merged)."""
    from .evaluate import load_rttms

    merged: dict[str, list[str]] = {}
    turns = load_rttms(path, merged)
    for file_id, names in merged.items():
        warn(f"{named}: file id {file_id}: the turns of {', '.join(names)} differ and were merged")
    return turns


def _load_references(ref: Path) -> dict:
    try:
        references = load_rttms_warning(ref, f"--ref {ref}")
    except OSError as e:
        fail(f"--ref {read_problem(e)}")
    except ValueError as e:
        fail(f"--ref {e}")
    return references


def _write_outputs(result, targets, plot: Optional[Path], references: dict) -> str | None:
    """Write one result's turns (and timeline) to every target; None, or why a write failed. An input's
    files are written all or none: when one fails, those written before it are taken back (the files they
    replaced, with --force, restored), so a rerun once the cause is mended is not refused as done."""
    import shutil
    import tempfile

    from .writers import rttm_id, write_turns

    files = [Path(p) for p, _ in targets if p != "-"] + ([plot] if plot else [])
    kept: dict[Path, Path] = {}  # an existing file -> its copy, until every file is written
    path, written = None, []
    try:
        for path in files:
            if path.exists():
                fd, copy = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old")
                kept[path] = Path(copy)
                os.close(fd)
                shutil.copy2(path, kept[path])
        for path, fmt in targets:
            write_turns(result.turns, path, fmt, result.file_id)
            written.append(path)
        if plot:
            from .plot import plot_timeline

            path = plot
            plot_timeline(result.turns, plot, reference=references.get(rttm_id(result.file_id)),
                          title=result.file_id, duration=result.duration)
    except BrokenPipeError:
        raise  # stdout closed (| head): the run ends there, quietly
    except BaseException as e:  # a failed write, or Ctrl-C / SIGTERM in the middle of them
        for done in [Path(p) for p in written if p != "-"]:
            if done in kept:
                os.replace(kept.pop(done), done)
            else:
                done.unlink(missing_ok=True)
        if not isinstance(e, (OSError, ValueError)):
            raise
        on_stdout = " (its turns went to stdout)" if "-" in written else ""
        return (f"cannot write {path} ({getattr(e, 'strerror', None) or e}); none of its files were "
                f"written{on_stdout}")
    finally:
        for copy in kept.values():
            copy.unlink(missing_ok=True)
    return None


def _summary(rows, references: dict) -> None:
    from rich.table import Table

    from .evaluate import score
    from .writers import rttm_id

    table = Table(title="diarization")
    for col in ("file", "duration", "speakers", "talk time (s) per speaker", "turns") + (("DER",) if references else ()):
        table.add_column(col)
    for path, r in rows:
        talk = {s: 0.0 for s in r.speakers}
        for t in r.turns:
            talk[t.speaker] += t.end - t.start
        cells = [escape(path.name), f"{r.duration:.1f} s", str(len(r.speakers)),
                 ", ".join(f"{s}: {v:.1f}" for s, v in talk.items()) or "-", str(len(r.turns))]
        if references:
            ref_turns = references.get(rttm_id(r.file_id))
            cells.append(f"{100 * score({r.file_id: ref_turns}, {r.file_id: r.turns})[-1]['der']:.1f}%"
                         if ref_turns is not None else "-")
        table.add_row(*cells)
    print_table(console, table)


@app.command()
def embed(
    ctx: typer.Context,
    audio: Annotated[list[Path], typer.Argument(metavar="AUDIO", help="Audio files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                      help="Output file: a path ending in .npz or .json (not a format name, "
                                           "not -: embeddings are not written to stdout).")],
    level: Annotated[Level, typer.Option(help="window: every 0.4 s window; segment: clustered segments; "
                                              "speaker: one centroid per speaker found; file: one mean "
                                              "embedding per input.")] = Level.window,
    num_speakers: NumSpeakersOpt = None,
    min_speakers: MinSpeakersOpt = 1,
    max_speakers: MaxSpeakersOpt = None,
    vad: VadOpt = VAD.silero,
    method: ClusterOpt = Method.ahc,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    window_hop: HopOpt = 0.2,
    batch_size: BatchOpt = 256,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write speaker embeddings (L2-normalised) of windows, segments, speakers or whole files.

    The .npz holds embeddings (N x D float32), start and end (seconds), paths and speakers (empty below
    segment level), one row each; .json holds the same as {path, start, end, speaker, embedding}
    records. Nothing is written unless every input is read.

    The speaker count and --cluster shape the segment and speaker levels, as for cluster; --vad decides
    the speech of every level but window.

    \b
    Example:
      diarize embed interview.wav --level speaker --num-speakers 2 --out speakers.npz
    """
    from .audio import AudioError, load_audio_header
    from .embeddings import collect_embeddings, save_embeddings
    from .model import ModelError, load_model
    from .pipeline import PipelineConfig

    if out.suffix.lower() not in (".npz", ".json"):
        name = str(out).lower().lstrip(".")
        hint = f" (e.g. {audio[0].stem or 'out'}.{name})" if name in ("npz", "json") else ""
        fail(f"--out {out}: use a .npz or .json path{hint}", USAGE)
    check_counts(num_speakers, min_speakers, max_speakers)
    if level in (Level.window, Level.file) and (num_speakers or min_speakers > 1 or max_speakers):
        warn(f"the speaker count options are not used at --level {level.value}")
    unused = [opt for opt, param, idle in (("--vad", "vad", level == Level.window),
                                           ("--cluster", "method", level in (Level.window, Level.file)))
              if idle and ctx.get_parameter_source(param).name == "COMMANDLINE"]
    if unused:
        warn(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used at --level {level.value}")
    check_target(out, force)
    files = audio_inputs(audio)
    unreadable = []
    for path in files:  # every bad input named at once: nothing is written unless all are read
        try:
            load_audio_header(path)
        except AudioError as e:
            unreadable.append(str(e))
    for message in unreadable:
        error(message)
    if unreadable:
        fail(f"{len(unreadable)} of {len(files)} inputs cannot be read: nothing written")
    try:
        encoder = load_model(model, device)
    except (ModelError, ValueError) as e:
        fail(str(e))
    if level in (Level.segment, Level.speaker) and num_speakers is None and encoder.calibration is None:
        from .cluster import NO_CALIBRATION

        fail(f"{encoder.source}: {NO_CALIBRATION}")
    # overlapped speech's second speaker would only widen the spans: embeddings are of each speaker's own turns
    config = PipelineConfig(window_hop=window_hop, batch_size=batch_size, vad=vad.value, cluster=method.value,
                            overlap=False)
    counts = dict(num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers, seed=seed)

    def done(path: Path, warnings: list[str]) -> None:
        bar.update(task, advance=1, info=escape(path.name))
        for w in warnings:
            warn(w)

    with progress_bar(quiet) as bar:
        task = bar.add_task("embed", total=len(files), info="")
        try:
            result = collect_embeddings(files, encoder, level.value, config, done, counts)
        except (AudioError, ValueError) as e:
            fail(str(e))
    try:
        save_embeddings(result, out)
    except (OSError, ValueError) as e:
        fail(f"{out}: cannot write ({getattr(e, 'strerror', None) or e})")
    if not quiet:
        rows, dim = result["embeddings"].shape
        console.print(f"wrote {rows} x {dim} embeddings to {escape(str(out))}")


@app.command()
def evaluate(
    ref: Annotated[Path, typer.Argument(metavar="REF", help="Reference RTTM file or folder.")],
    hyp: Annotated[Path, typer.Argument(metavar="HYP", help="Hypothesis RTTM file or folder.")],
    collar: Annotated[float, typer.Option(metavar="SECONDS", min=0.0,
                                          help="Seconds forgiven on EACH side of every reference "
                                               "boundary (pyannote's collar is twice this).")] = 0.0,
    skip_overlap: Annotated[bool, typer.Option(help="Do not score overlapped speech.")] = False,
    uem: Annotated[Optional[Path], typer.Option(metavar="FILE",
                                                help="Score only inside these regions (NIST UEM lines: "
                                                     "file channel start end); files it does not list "
                                                     "are scored whole.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE",
                                                     help="Also write the rows as JSON (- for "
                                                          "stdout, instead of the table).")] = None,
    force: ForceOpt = False,
) -> None:
    """Score diarization: DER (missed, false alarm, confusion) and JER per file and in total.

    Reference and hypothesis files are matched by the file id of their RTTM lines.

    \b
    Example:
      diarize evaluate refs/ hyps/ --collar 0.25
    """
    from rich.table import Table

    from .evaluate import read_uem, score

    if not math.isfinite(collar):
        fail(f"--collar {collar}: give a number of seconds", USAGE)
    to_stdout = check_json_target(json_out, force)
    try:
        references, hypotheses = load_rttms_warning(ref, str(ref)), load_rttms_warning(hyp, str(hyp))
        if hypotheses and not set(references) & set(hypotheses):
            fail(f"no file id of {hyp} is one of {ref}: {_ids(hypotheses)} against {_ids(references)}")
        regions = read_uem(uem) if uem else None
        if uem and not set(references) & set(regions):
            fail(f"no file id of --uem {uem} is one of {ref}: {_ids(regions)} against {_ids(references)}")
        rows = score(references, hypotheses, collar=2 * collar, skip_overlap=skip_overlap, uem=regions)
    except OSError as e:
        fail(read_problem(e))
    except ValueError as e:
        fail(str(e))
    if uem:
        whole = {k: v for k, v in references.items() if k not in regions}
        if whole:
            warn(f"--uem {uem} does not list {len(whole)} of {len(references)} reference files, scored "
                 f"whole: {_ids(whole)}")
        unused = {k: v for k, v in regions.items() if k not in references}
        if unused:
            warn(f"{len(unused)} file ids of --uem {uem} are not in the reference, not used: {_ids(unused)}")
    unscored = [r["file"] for r in rows[:-1] if not r["total"]]  # the last row is the TOTAL
    if unscored:
        left = f" once the collar of {collar:g} s each side is taken out" if collar else ""
        left += " inside the --uem regions" if uem else ""
        warn(f"no reference speech is left to score{left} in {len(unscored)} of {len(rows) - 1} files "
             f"({', '.join(unscored[:5])}{' ...' if len(unscored) > 5 else ''}): their DER is 0% without a "
             f"false alarm, 100% with one (pyannote's convention)")
    unmatched = {k: v for k, v in hypotheses.items() if k not in references}
    if unmatched:
        n = len(unmatched)
        warn(f"{n} hypothesis file id{'s are' if n != 1 else ' is'} not in the reference, not scored: "
             f"{_ids(unmatched)}")
    missing = {k: v for k, v in references.items() if k not in hypotheses}
    if missing:
        warn(f"no hypothesis for {len(missing)} of {len(references)} reference files, scored as all missed: "
             f"{_ids(missing)}")
    # each row says how it was scored: a der.json is read apart from the command that wrote it
    how = {"collar": collar, "skip_overlap": skip_overlap, "uem": str(uem) if uem else None}
    records = [{**{k: v if isinstance(v, (str, int)) else float(v) for k, v in r.items()}, **how} for r in rows]
    if not to_stdout:
        within = f", inside the regions of {escape(str(uem))}" if uem else ""
        overlap = "skipped" if skip_overlap else "scored"
        table = Table(title=f"collar {collar:g} s each side, overlap {overlap}{within}")
        for col in ("file", "DER %", "missed %", "false alarm %", "confusion %", "JER %", "speakers ref/hyp"):
            table.add_column(col, justify="right" if col != "file" else "left")
        for r in rows:
            rates = (f"{100 * r[k]:.2f}" for k in ("der", "missed", "false_alarm", "confusion", "jer"))
            table.add_row(escape(r["file"]), *rates, f"{r['ref_speakers']}/{r['hyp_speakers']}")
        print_table(stdout_console, table)
    if json_out:
        write_json(json_out, records)


def _ids(turns_by_id: dict) -> str:
    """A few file ids, for a message."""
    ids = sorted(turns_by_id)
    return ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")


@app.command()
def info(model: ModelOpt = None) -> None:
    """Show a model: its file, architecture and the figures measured when it was trained (a speaker
    encoder, or an overlap detector given by its path).

    \b
    Example:
      diarize info
    """
    from .model import ModelError, available_models, load_checkpoint, model_from_checkpoint, resolve_model_path
    from .overlap import BUNDLED_DETECTOR, detector_from_checkpoint

    out = stdout_console
    try:
        path = resolve_model_path(model)
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") == "overlap":
            detector = detector_from_checkpoint(ckpt, path)
            out.print(f"[bold]overlap detector[/] {escape(str(detector.source))} "
                      f"({sum(p.numel() for p in detector.parameters()):,} parameters)")
            _print_fields(out, {**vars(detector.config), "threshold": detector.threshold, **detector.metrics})
            return
        encoder = model_from_checkpoint(ckpt, path)
    except (ModelError, ValueError) as e:
        fail(str(e))
    out.print(f"[bold]model[/] {escape(str(encoder.source))} ({encoder.source.stat().st_size / 1e6:.1f} MB, "
              f"{sum(p.numel() for p in encoder.parameters()):,} parameters)")
    for k, v in vars(encoder.config).items():
        out.print(f"  {k}: {v}")
    _print_fields(out, encoder.metrics)
    if encoder.calibration is None:
        out.print("[bold]calibration[/] none: give --num-speakers, or run diarize validate DATA --calibrate")
    else:
        out.print(f"[bold]calibration[/] (speaker count; read on {encoder.calibration.speakers} speakers)")
        fields = encoder.calibration.as_dict()
        fields["split_silhouettes"] = " / ".join(f"{e:.4f}" for e in fields["split_silhouettes"]) or "not measured"
        _print_fields(out, fields)
    # after the encoder's own lines, so that its figures stand under it and not under the detector
    out.print(f"[bold]available[/] {escape(', '.join(available_models())) or '-'}", soft_wrap=True)
    out.print(f"[bold]overlap detector[/] {BUNDLED_DETECTOR} (cluster; off with --no-overlap)", soft_wrap=True)


def _print_fields(out: Console, fields: dict) -> None:
    for k, v in fields.items():
        out.print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {escape(str(v))}")


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(
        metavar="DATA", help="Held-out speakers: a folder with one subfolder per speaker, or a TSV/CSV manifest.")],
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    per_speaker: Annotated[int, typer.Option(metavar="N", min=2, help="Utterances per speaker for the EER.")] = 20,
    cache: Annotated[Path, typer.Option(metavar="DIR",
                                        help="Feature cache folder.")] = Path.home() / ".cache" / "diarize",
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Processes computing features.")] = 1,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE",
                                                     help="Also write the figures as JSON (- for stdout: the "
                                                          "text then goes to stderr).")] = None,
    calibrate: Annotated[Optional[Path], typer.Option(
        metavar="MODEL",
        help="Write the model with the speaker-count calibration read on these speakers to this .pt file "
             "(may be the model's own file; replaced only with --force).")] = None,
    also: AlsoOpt = None,
    rooms: RoomsOpt = False,
    clips: ClipsOpt = None,
    noise_dir: NoiseDirOpt = None,
    force: ForceOpt = False,
) -> None:
    """Measure a speaker encoder on held-out speakers: EER, pair accuracy, ZHAW misclassification rate, and
    the calibration its speaker count needs (stored in a model file with --calibrate); with --also, --rooms
    and --clips, the EER of each further set and their mean.

    \b
    Example:
      diarize validate ~/corpus/dev.tsv --model runs/enc/best.pt --calibrate runs/enc/calibrated.pt
    """
    from .data import DataError, list_dataset
    from .model import ModelError, load_model
    from .train import validate as run_validation

    to_stdout = check_json_target(json_out, force)
    check_folders(cache=cache)
    check_sources(noise_dir=noise_dir, clips=[clips] if clips else None)
    if calibrate:
        if calibrate.suffix != ".pt":
            fail(f"{calibrate}: a model file ends in .pt", USAGE)
        check_target(calibrate, force)
    try:
        encoder = load_model(model, device)
        figures = run_validation(encoder, list_dataset(data), cache, next(encoder.parameters()).device,
                                 per_speaker, workers, more=named_sets(also or []), rooms=rooms, clips=clips,
                                 noise_dirs=noise_dir or [])
    except (DataError, ModelError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}")
    if figures["skipped"]:
        warn(f"skipped {figures['skipped']} unreadable file(s): " + "; ".join(figures["skipped_files"]))
    out = console if to_stdout else stdout_console  # stdout holds the JSON alone
    out.print(f"EER {100 * figures['eer']:.2f}% over {figures['utterances']} utterances of "
              f"{figures['speakers']} speakers ({figures['same_pairs']:,} same-speaker and "
              f"{figures['different_pairs']:,} different-speaker pairs); pair accuracy {figures['pair_accuracy']:.3f}")
    further = {k[4:]: v for k, v in figures.items() if k.startswith("eer_") and k not in ("eer_val", "eer_mean")}
    for name, eer in further.items():
        out.print(f"EER {100 * eer:.2f}% on {name}")
    if further:
        out.print(f"mean EER {100 * figures['eer_mean']:.2f}%")
    if "mr" in figures:
        out.print(f"ZHAW misclassification rate {100 * figures['mr']:.1f}% on {figures['mr_speakers']} speakers "
                  f"(threshold {figures['mr_threshold']:.2f} chosen on the others)")
    else:
        out.print(f"no ZHAW misclassification rate: {figures['mr_skipped']}")
    if "calibration" in figures:
        c = figures["calibration"]
        out.print(f"calibration: merge at similarity {c['merge_similarity']:.3f} (same/different centroid "
                  f"error {100 * c['centroid_eer']:.1f}%), same voice {c['same_voice']:.3f}, "
                  f"one voice split in 2, 3, ...: silhouette "
                  + " / ".join(f"{v:.3f}" for v in (c["min_silhouette"], *c["split_silhouettes"])))
        warn_few_speakers(c["speakers"])
    else:
        out.print(f"no calibration: {figures['calibration_skipped']}")
    if calibrate:
        if "calibration" not in figures:
            fail(f"{calibrate} not written: {figures['calibration_skipped']}")
        from .model import load_checkpoint, write_checkpoint

        try:
            write_checkpoint(calibrate, {**load_checkpoint(encoder.source), "calibration": figures["calibration"]})
        except OSError as e:
            fail(f"{calibrate}: cannot write ({e.strerror})")
        out.print(f"calibrated model written to {escape(str(calibrate))}")
    if json_out:
        write_json(json_out, figures)


@app.command()
def benchmark(
    ctx: typer.Context,
    audio: Annotated[Optional[Path], typer.Argument(
        metavar="AUDIO", help="Recording to time (default: one of --minutes built from the example).")] = None,
    minutes: Annotated[float, typer.Option(metavar="MINUTES", min=0.1, max=600,
                                           help="Length of the built recording (it is "
                                                "written to a temporary file: 115 MB an hour).")] = 30.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    window_hop: HopOpt = 0.2,
    vad: VadOpt = VAD.silero,
    overlap: OverlapOpt = True,
    overlap_model: OverlapModelOpt = None,
    batch_size: BatchOpt = 256,
    threads: Annotated[int, typer.Option(metavar="N", min=0, help="Torch CPU threads (0: torch's default).")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE",
                                                     help="Also write the figures as JSON (- for stdout: the "
                                                          "text then goes to stderr).")] = None,
    force: ForceOpt = False,
) -> None:
    """Time each stage of diarization; report speed and peak memory.

    Stages: decode, features, speech detection, overlap detection, embeddings, clustering, output; figures:
    seconds per hour of audio, times faster than real time, peak resident memory. What a process pays once
    (imports, loading the models) is timed apart, on a 3 s warm-up.

    \b
    Example:
      diarize benchmark --minutes 30 --json bench.json
    """
    import tempfile

    import torch
    from rich.table import Table

    from .audio import AudioError, load_audio_header
    from .benchmark import make_recording, run_benchmark
    from .model import ModelError, pick_device
    from .pipeline import PipelineConfig

    to_stdout = check_json_target(json_out, force)
    try:
        pick_device(device)  # before minutes of building a recording that could not be timed
    except ValueError as e:
        fail(str(e))
    if audio is not None:
        try:
            load_audio_header(audio)  # a folder or a missing file is said before any warning about it
        except AudioError as e:
            fail(str(e))
        if ctx.get_parameter_source("minutes").name == "COMMANDLINE":
            warn(f"--minutes is not used: {audio} is timed as it is")
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if audio is None:
            console.print(f"building a {minutes:g}-minute recording from the example")
            try:
                built = make_recording(Path(tmp) / f"bench-{minutes:g}min.wav", minutes)
            except (OSError, RuntimeError) as e:  # soundfile's errors (a full disk) are RuntimeErrors
                fail(f"cannot build the recording in {tmp}: {e}")
        try:
            r = run_benchmark(audio or built, model, device, PipelineConfig(window_hop=window_hop,
                                                                            batch_size=batch_size, vad=vad.value,
                                                                            overlap=overlap),
                              overlap_model)
        except (ModelError, ValueError) as e:  # AudioError is a ValueError
            fail(str(e))
        if audio is None:  # the built file is gone with its temporary folder
            r["audio"] = f"examples/meeting.wav repeated at varying gain to {minutes:g} minute{'s' * (minutes != 1)}"
    length = f"{r['audio_seconds'] / 60:.1f} min" if r["audio_seconds"] >= 60 else f"{r['audio_seconds']:.1f} s"
    table = Table(title=f"{length} of audio on {r['device']} ({r['threads']} threads)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("s per hour of audio", justify="right")
    for stage, sec in r["stages"].items():
        table.add_row(stage, f"{sec:.2f}", f"{3600 * sec / r['audio_seconds']:.1f}")
    table.add_row("[bold]total", f"[bold]{r['wall_seconds']:.2f}", f"[bold]{r['seconds_per_hour']:.1f}")
    out = console if to_stdout else stdout_console  # stdout holds the JSON alone
    print_table(out, table)
    if vad == VAD.silero:
        out.print("silero-vad scores the audio on threads of its own while features and embeddings are "
                  "computed: its time is inside theirs, and speech detection counts only the wait for it",
                  style="dim")
    out.print(f"{r['x_real_time']:.3g}x real time (RTF {r['rtf']:.4f}), peak RSS {r['peak_rss_mb']:.0f} MB; "
              f"start-up (once a process) {r['startup_seconds']:.1f} s")
    if json_out:
        write_json(json_out, r)


def main() -> None:
    import signal

    # SIGTERM ends every command as Ctrl-C does (a file being written is taken back), with its own exit code
    INTERRUPTION_SAID.clear()  # (one command a process; tests run several)
    with terminated_as_interrupted() as received:
        try:
            app()  # Click ends a run whose stdout was closed early (EPIPE) quietly, with exit status 1
        except SystemExit as e:
            if e.code in (130, 143) and not INTERRUPTION_SAID:  # Typer's code for any KeyboardInterrupt: 130
                console.print("interrupted: what was written is whole (no file is left half-written)")
            if e.code == 130 and received[0] == signal.SIGTERM:
                raise SystemExit(143) from None
            raise
