"""What training promises: an encoder trained on synthetic speakers tells speakers it never heard apart
(an untrained one cannot), an interrupted run resumes to exactly the weights of an uninterrupted one, and
two torchrun processes train the same weights as one."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import random_voice, spread_voices, write_speakers

from diarize.data import build_cache, list_dataset
from diarize.model import EncoderConfig, ModelError, SpeakerEncoder, load_checkpoint, load_model
from diarize.train import TrainConfig, TrainingInterrupted, WorkerDied, train
from diarize.validation import set_eer, speaker_set

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    """200 training speakers x 2 utterances of 1-1.5 s, and 8 new speakers x 5 utterances of 2-3 s whose
    pitches are spread over the range (see tests/synthetic.py)."""
    root = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(0)
    write_speakers(root / "train", [random_voice(rng) for _ in range(200)], 2, rng, seconds=(1.0, 1.5))
    rng = np.random.default_rng(2)
    write_speakers(root / "new", spread_voices(8, rng), 5, rng, seconds=(2.0, 3.0), prefix="new")
    return root


@pytest.fixture(scope="module")
def few_voices(tmp_path_factory) -> Path:
    """6 speakers x 2 utterances: enough for the loop, too few to learn from."""
    root = tmp_path_factory.mktemp("few_voices")
    rng = np.random.default_rng(1)
    write_speakers(root, [random_voice(rng) for _ in range(6)], 2, rng)
    return root


def test_training_learns_to_tell_speakers_it_never_heard_apart(voices, tmp_path, make_audio, monkeypatch):
    """The check the original Keras model failed (it stayed at chance). 1,800 steps of a tiny encoder take
    about 50 s on one CPU thread. Measured: held-out EER 3.6% trained (training seeds 1-3: 7.4, 5.0,
    5.4%; dividing by the window's std without its 1e-5: 3.9%), 16.3% untrained. 900 steps left it near
    the line: seeds 0-3 gave 3.8-9.7%, and that rounding-level change 14.9%. 200 training speakers, not 20:
    with few speakers the encoder learns them, not what tells speakers apart, and does no better than an
    untrained one. 8 windows a speaker: with the loss a mean over all pairs, 4 (3 same pairs in 47) left
    this tiny model near 20% after 600 steps."""
    tiny = EncoderConfig(lstm_hidden=32, dense=(32,), n_outputs=16)
    config = TrainConfig(steps=1800, speakers_per_batch=8, windows_per_speaker=8, lr=5e-3, val_every=1800)
    new = list_dataset(voices / "new")
    summary = train(list_dataset(voices / "train"), new, tmp_path / "run", tiny, config,
                    cache_dir=tmp_path / "cache")
    trained = summary["metrics"]["eer"]

    torch.manual_seed(config.seed)  # the very weights training started from
    held_out = speaker_set("val", build_cache(new, tmp_path / "cache"), config.val_utterances)
    untrained = set_eer(SpeakerEncoder(tiny), held_out, CPU)["eer"]
    print(f"held-out EER: trained {trained:.3f}, untrained {untrained:.3f}; "
          f"{config.steps / summary['seconds']:.0f} steps/s")
    assert summary["metrics"]["speakers"] == 8 and summary["metrics"]["utterances"] == 40
    assert trained < 0.10
    assert untrained > 0.12 and untrained > trained + 0.05  # the task is not solved by any network
    model = load_model(tmp_path / "run" / "best.pt", device="cpu")
    assert model.metrics["eer"] == summary["best_eer"]

    # the retrained model brings its own speaker-count calibration, read on its held-out speakers, and the
    # pipeline counts speakers with it
    import diarize.pipeline as pipeline
    from diarize.cluster import cluster_embeddings

    assert model.calibration is not None and model.calibration.speakers == 8
    used = []
    monkeypatch.setattr(pipeline, "cluster_embeddings",
                        lambda *a, **k: used.append(a[5]) or cluster_embeddings(*a, **k))
    result = pipeline.diarize(make_audio("talk.wav"), model)
    assert used == [model.calibration] and result.speakers


RESUME_ENCODER = EncoderConfig(lstm_hidden=8, dense=(8,), n_outputs=8)  # dropout 0.2: its masks must replay
RESUME_CONFIG = TrainConfig(steps=6, speakers_per_batch=4, windows_per_speaker=2, augment=True, val_every=100)
WAVE_CONFIG = dataclasses.replace(RESUME_CONFIG, speed_perturb=True)  # speeds too: all drawn from (seed, step)


def interrupt_at(step: int, how: str):
    """A training hook that interrupts the run once `step` is done: Ctrl-C (SIGINT), SIGTERM, or a
    KeyboardInterrupt raised in the loop."""
    def hook(event: str, **info) -> None:
        if event == "step" and info["step"] == step:
            if how in ("sigint", "sigterm"):
                os.kill(os.getpid(), signal.SIGINT if how == "sigint" else signal.SIGTERM)
            else:
                raise KeyboardInterrupt
    return hook


def assert_same_training_state(a: dict, b: dict, weights_atol: float, moments_rtol: float) -> None:
    """Same weights (elementwise) and the same Adam moments (relative to their size: they are tiny)."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, weights in a["state_dict"].items():
        assert torch.allclose(weights, b["state_dict"][name], rtol=0, atol=weights_atol), name
    for key, state in a["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            mine, theirs = state[moment], b["optimizer"]["state"][key][moment]
            assert torch.linalg.norm(mine - theirs) <= moments_rtol * torch.linalg.norm(theirs), (key, moment)


def test_sigterm_to_the_process_group_is_a_stop_not_a_dead_worker(few_voices, tmp_path, monkeypatch):
    import diarize.train as training

    draw = training._Batches.__next__

    def group_terminated(batches):  # the signal reaches this process and ends a worker drawing batch 3
        if batches.next_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            raise WorkerDied("a process drawing training batches died")
        return draw(batches)
    monkeypatch.setattr(training._Batches, "__next__", group_terminated)
    with pytest.raises(TrainingInterrupted) as interrupted:
        train(list_dataset(few_voices), None, tmp_path / "run", RESUME_ENCODER, RESUME_CONFIG,
              cache_dir=tmp_path / "cache")
    assert interrupted.value.args[1] == signal.SIGTERM
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3  # the last whole step, saved


@pytest.mark.parametrize("how", ["sigint", "sigterm", "keyboard-interrupt"])
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(few_voices, tmp_path, how):
    data, cache = list_dataset(few_voices), tmp_path / "cache"
    train(data, None, tmp_path / "straight", RESUME_ENCODER, RESUME_CONFIG, cache_dir=cache)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as interrupted:
        train(data, None, tmp_path / "run", RESUME_ENCODER, RESUME_CONFIG, cache_dir=cache,
              hook=interrupt_at(3, how))
    assert signal.getsignal(signal.SIGINT) == handler  # Ctrl-C means Ctrl-C again afterwards
    last = tmp_path / "run" / "last.pt"
    assert interrupted.value.args[0] == last
    assert interrupted.value.args[1] == (signal.SIGTERM if how == "sigterm" else signal.SIGINT)  # exit 143 / 130
    assert load_checkpoint(last)["step"] == 3  # the last completed step

    summary = train(data, None, tmp_path / "run", RESUME_ENCODER, RESUME_CONFIG, cache_dir=cache, resume=last)
    assert summary["step"] == 6
    resumed, straight = load_checkpoint(last), load_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["step"] == straight["step"] == 6
    assert_same_training_state(resumed, straight, weights_atol=1e-7, moments_rtol=1e-6)
    assert resumed["running_loss"] == pytest.approx(straight["running_loss"], rel=1e-6)  # the logged loss too


def test_the_first_ctrl_c_is_answered_at_once_and_a_validation_round_is_announced(few_voices, tmp_path):
    """A step due for validation can take minutes: the hook hears of the round before it begins, and of a
    first Ctrl-C as it comes (the command line says it will stop after the step in flight)."""
    events = []
    stop = interrupt_at(3, "sigint")

    def hook(event: str, **info) -> None:
        events.append((event, info.get("step")))
        stop(event, **info)
    config = dataclasses.replace(RESUME_CONFIG, val_every=2)
    data = list_dataset(few_voices)
    with pytest.raises(TrainingInterrupted):
        train(data, data, tmp_path / "run", RESUME_ENCODER, config, cache_dir=tmp_path / "cache", hook=hook)
    names = [e for e, _ in events]
    assert names.count("stopping") == 1 and names[names.index("stopping") - 1] == "step"
    assert ("validating", 2) in events and ("validating", 4) not in events


def test_resuming_a_validated_run_without_its_validation_data_is_refused_before_any_warning(few_voices, tmp_path):
    data = list_dataset(few_voices)
    config = TrainConfig(steps=2, speakers_per_batch=2, windows_per_speaker=2, val_every=1)
    train(data, data, tmp_path / "run", RESUME_ENCODER, config, cache_dir=tmp_path / "cache")
    events = []
    with pytest.raises(ValueError, match="resume it with the same validation data"):
        train(data, None, tmp_path / "run", RESUME_ENCODER, dataclasses.replace(config, steps=4),
              cache_dir=tmp_path / "cache", resume=tmp_path / "run" / "last.pt",
              hook=lambda event, **info: events.append(event))
    assert events == []  # no calibration warning, no features built: the checkpoint alone decides


@pytest.mark.parametrize("left_out", ["val", "also"])
def test_a_run_stopped_before_its_first_validation_is_not_resumed_without_its_validation_data(few_voices, tmp_path,
                                                                                             left_out):
    data = list_dataset(few_voices)
    config = TrainConfig(steps=4, speakers_per_batch=2, windows_per_speaker=2, val_every=100)
    with pytest.raises(TrainingInterrupted):  # at step 1: no round yet, so no best EER to tell it was validated
        train(data, data, tmp_path / "run", RESUME_ENCODER, config, cache_dir=tmp_path / "cache",
              more_val=[("more", data)], hook=interrupt_at(1, "keyboard-interrupt"))
    given = {"val": (None, [("more", data)]), "also": (data, [])}[left_out]
    with pytest.raises(ValueError, match="resume it with the same validation data"):
        train(data, given[0], tmp_path / "run", RESUME_ENCODER, config, cache_dir=tmp_path / "cache",
              resume=tmp_path / "run" / "last.pt", more_val=given[1])


def test_a_resume_reads_the_feature_cache_its_run_was_started_with(few_voices, tmp_path):
    data = list_dataset(few_voices)
    with pytest.raises(TrainingInterrupted):
        train(data, None, tmp_path / "run", RESUME_ENCODER, RESUME_CONFIG, cache_dir=tmp_path / "cache",
              hook=interrupt_at(3, "keyboard-interrupt"))
    events = []
    train(data, None, tmp_path / "run", RESUME_ENCODER, RESUME_CONFIG, resume=tmp_path / "run" / "last.pt",
          hook=lambda event, **info: events.append(event))
    assert not (tmp_path / "run" / "features").exists() and "features" not in events  # nothing computed again


def test_batches_drawn_ahead_by_worker_processes_train_the_same_weights(few_voices, tmp_path):
    """With --workers, batches (here speed-perturbed waveforms in rooms and noise) are drawn in other
    processes ahead of their step: the run is the one drawn in the training process, step for step."""
    data, cache, config = list_dataset(few_voices), tmp_path / "cache", WAVE_CONFIG
    train(data, None, tmp_path / "serial", RESUME_ENCODER, config, cache_dir=cache)
    train(data, None, tmp_path / "workers", RESUME_ENCODER, config, cache_dir=cache, workers=2)
    serial, workers = load_checkpoint(tmp_path / "serial" / "last.pt"), load_checkpoint(tmp_path / "workers" / "last.pt")
    assert serial["step"] == workers["step"] == config.steps
    assert_same_training_state(workers, serial, weights_atol=0, moments_rtol=0)


def test_a_batch_worker_that_dies_stops_the_run_with_an_error_instead_of_a_hang(few_voices, tmp_path):
    """A worker killed (out of memory, say) leaves its batch undrawn: the run says so and stops."""
    import multiprocessing

    def kill_a_worker(event: str, **info) -> None:
        if event == "step" and info["step"] == 2:
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    config = dataclasses.replace(WAVE_CONFIG, steps=40)
    with pytest.raises(WorkerDied, match="died"):
        train(list_dataset(few_voices), None, tmp_path / "run", RESUME_ENCODER, config, cache_dir=tmp_path / "cache",
              workers=2, hook=kill_a_worker)


def test_a_second_ctrl_c_inside_a_step_saves_nothing_of_it_and_the_resume_matches_an_unbroken_run(few_voices,
                                                                                                   tmp_path):
    """Stopped while step 4 is being validated (the second Ctrl-C of an impatient user): last.pt stays at
    step 2, the last whole step, and the resumed run ends with the weights and log of an unbroken one."""
    data, cache = list_dataset(few_voices), tmp_path / "cache"
    config = dataclasses.replace(RESUME_CONFIG, val_every=2)

    def stop_in_validation(event: str, **info) -> None:
        if event == "val" and info["step"] == 4:
            raise KeyboardInterrupt

    train(data, data, tmp_path / "straight", RESUME_ENCODER, config, cache_dir=cache)
    with pytest.raises(TrainingInterrupted) as interrupted:
        train(data, data, tmp_path / "run", RESUME_ENCODER, config, cache_dir=cache, hook=stop_in_validation)
    last = interrupted.value.args[0]
    assert load_checkpoint(last)["step"] == 2
    train(data, data, tmp_path / "run", RESUME_ENCODER, config, cache_dir=cache, resume=last)
    resumed, straight = load_checkpoint(last), load_checkpoint(tmp_path / "straight" / "last.pt")
    assert_same_training_state(resumed, straight, weights_atol=1e-7, moments_rtol=1e-6)

    def log(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
    # validation at steps 2, 4 and 6; the loss at the last step
    assert log("run") == log("straight") and [r["step"] for r in log("run")] == [2, 4, 6, 6]


@pytest.mark.parametrize("config", [RESUME_CONFIG, WAVE_CONFIG], ids=["augment", "augment+speed"])
def test_a_resumed_run_keeps_its_own_settings_whatever_the_command_line_says(few_voices, tmp_path, config):
    """Options given again on a resume (here: no augmentation at all) are ignored, and it ends with the
    weights of the unbroken run."""
    data, cache = list_dataset(few_voices), tmp_path / "cache"
    train(data, None, tmp_path / "straight", RESUME_ENCODER, config, cache_dir=cache)
    with pytest.raises(TrainingInterrupted):
        train(data, None, tmp_path / "run", RESUME_ENCODER, config, cache_dir=cache,
              hook=interrupt_at(3, "keyboard-interrupt"))
    other = TrainConfig(steps=config.steps, speakers_per_batch=3, windows_per_speaker=3, lr=0.1)
    train(data, None, tmp_path / "run", RESUME_ENCODER, other, cache_dir=cache, resume=tmp_path / "run" / "last.pt")
    resumed = load_checkpoint(tmp_path / "run" / "last.pt")
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert_same_training_state(resumed, straight, weights_atol=1e-7, moments_rtol=1e-6)


def test_resuming_a_run_that_has_its_steps_already_is_refused(few_voices, tmp_path):
    config = TrainConfig(steps=2, speakers_per_batch=2, windows_per_speaker=2)
    train(list_dataset(few_voices), None, tmp_path / "run", RESUME_ENCODER, config)
    with pytest.raises(ValueError, match="at step 2 already"):
        train(list_dataset(few_voices), None, tmp_path / "next", RESUME_ENCODER, config,
              resume=tmp_path / "run" / "last.pt")


def test_the_cli_will_not_train_over_a_run_unless_told(diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    args = ["train", few_voices, "--out", tmp_path / "run", "--steps", "1", "--speakers-per-batch", "2",
            "--windows-per-speaker", "2", "--lstm-hidden", "8", "--dense", "8", "--outputs", "8", "--device", "cpu"]
    succeeds(diarize(*args))
    before = (tmp_path / "run" / "best.pt").read_bytes()
    assert "--resume" in fails_cleanly(diarize(*args, "--seed", "5"), "run", "--force")
    assert (tmp_path / "run" / "best.pt").read_bytes() == before
    succeeds(diarize(*args, "--seed", "5", "--force"))
    assert (tmp_path / "run" / "best.pt").read_bytes() != before


TINY_CLI = ["--speakers-per-batch", "2", "--windows-per-speaker", "2", "--lstm-hidden", "8", "--dense", "8",
            "--outputs", "8", "--device", "cpu"]


def test_a_resume_holds_out_the_same_validation_speakers_and_keeps_the_validated_best(diarize, succeeds,
                                                                                      few_voices, tmp_path):
    run = tmp_path / "run"
    first = succeeds(diarize("train", few_voices, "--out", run, "--steps", "2", "--val-speakers", "2",
                             "--val-every", "1", *TINY_CLI))
    best = load_checkpoint(run / "best.pt")
    result = diarize("train", few_voices, "--steps", "3", "--resume", run / "last.pt", "--lr", "0.5", *TINY_CLI)
    stderr = succeeds(result)
    assert "train: 4 speakers" in first and "train: 4 speakers" in stderr  # the same 2 held out again
    assert "ignored on --resume" in stderr and "--lr" in stderr
    assert "step 3: val EER" in stderr
    after = load_checkpoint(run / "best.pt")
    assert after["metrics"] and (after["step"] == 3 or after["metrics"] == best["metrics"])


def test_a_run_validated_on_other_speakers_is_not_resumed_without_them(diarize, fails_cleanly, succeeds, few_voices,
                                                                       tmp_path):
    run = tmp_path / "run"
    succeeds(diarize("train", few_voices, "--val", few_voices, "--out", run, "--steps", "1", *TINY_CLI))
    fails_cleanly(diarize("train", few_voices, "--steps", "2", "--resume", run / "last.pt", *TINY_CLI),
                  "validated", "--val")


def test_a_validation_set_without_same_speaker_pairs_is_refused_before_training_and_force_keeps_the_old_run(
        diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    single = tmp_path / "single"  # one file a speaker: no same-speaker pair to score
    for speaker in sorted(p for p in few_voices.iterdir() if p.is_dir())[:3]:
        (single / speaker.name).mkdir(parents=True)
        first = sorted(f for f in speaker.rglob("*") if f.suffix in (".wav", ".flac"))[0]
        (single / speaker.name / first.name).write_bytes(first.read_bytes())
    run = tmp_path / "run"
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "1", *TINY_CLI))
    before, caches = (run / "last.pt").read_bytes(), sorted((run / "features").iterdir())
    result = diarize("train", few_voices, "--val", single, "--out", run, "--steps", "50", "--val-every", "40",
                     "--force", *TINY_CLI)
    fails_cleanly(result, "validation set val: no speaker has 2 files")
    assert "train ━" not in result.stderr and (run / "last.pt").read_bytes() == before  # no step, nothing lost
    assert sorted((run / "features").iterdir()) == caches  # said from the file list, before any audio was read


def test_a_new_run_in_the_folder_of_one_that_failed_starts_its_own_log(diarize, succeeds, few_voices, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 2, "loss": 0.5, "seconds": 0.1}\n')  # a run that died at step 2
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "2", *TINY_CLI))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) == 1


def test_a_resume_continues_in_the_runs_own_folder(diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    succeeds(diarize("train", few_voices, "--out", tmp_path / "run", "--steps", "1", *TINY_CLI))
    fails_cleanly(diarize("train", few_voices, "--out", tmp_path / "elsewhere", "--steps", "2", "--resume",
                          tmp_path / "run" / "last.pt", *TINY_CLI), "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_starting_over_with_force_leaves_nothing_of_the_old_run(diarize, succeeds, few_voices, tmp_path):
    run = tmp_path / "run"
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "100", "--val-every", "50", *TINY_CLI))
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "50", "--force", *TINY_CLI))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [50]
    assert load_checkpoint(run / "last.pt")["step"] == 50


def test_validate_says_why_it_gives_no_zhaw_rate_for_few_speakers(diarize, succeeds, few_voices, tiny_model,
                                                                    tmp_path):
    result = diarize("validate", few_voices, "--model", tiny_model, "--device", "cpu", "--cache", tmp_path)
    succeeds(result)
    assert "EER" in result.stdout and "no ZHAW misclassification rate: " in result.stdout
    assert "needs more than 40 speakers" in result.stdout
    # 6 speakers x 2 utterances: how few pairs the EER stands on is said with it
    said = " ".join(result.stdout.split())  # as one line, however the console wrapped it
    assert "over 12 utterances of 6 speakers (6 same-speaker and 60 different-speaker pairs)" in said


def test_resuming_from_a_model_file_without_training_state_is_refused(few_voices, tmp_path):
    config = TrainConfig(steps=1, speakers_per_batch=2, windows_per_speaker=2)
    train(list_dataset(few_voices), None, tmp_path / "run", RESUME_ENCODER, config)
    best = tmp_path / "run" / "best.pt"  # weights only: a model file
    with pytest.raises(ModelError, match="holds no training state"):
        train(list_dataset(few_voices), None, tmp_path / "again", RESUME_ENCODER, config, resume=best)


def test_two_torchrun_processes_train_the_same_weights_as_one(few_voices, tmp_path):
    """DDP on the gloo backend: each process embeds its part of the batch (9 windows: 5 and 4, padded to
    equal parts), the loss sees every pair of the whole batch, and the gradient the processes agree on is
    the single-process gradient (so Adam's moments match too). Dropout is off: its masks are drawn per
    process."""
    steps, s, m = 4, 3, 3
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "diarize", "train", str(few_voices),
           "--out", str(tmp_path / "ddp"), "--steps", str(steps), "--speakers-per-batch", str(s),
           "--windows-per-speaker", str(m), "--lstm-hidden", "8", "--dense", "8", "--outputs", "8",
           "--dropout", "0", "--device", "cpu", "--threads", "1", "--seed", "0"]
    env = {**os.environ, "DIARIZE_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    encoder = EncoderConfig(lstm_hidden=8, dense=(8,), n_outputs=8, dropout=0.0)
    config = TrainConfig(steps=steps, speakers_per_batch=s, windows_per_speaker=m, seed=0)
    train(list_dataset(few_voices), None, tmp_path / "single", encoder, config, cache_dir=tmp_path / "cache")
    ddp, single = load_checkpoint(tmp_path / "ddp" / "last.pt"), load_checkpoint(tmp_path / "single" / "last.pt")
    assert ddp["step"] == single["step"] == steps
    # the same sums in another order: float32 rounding, far under one Adam step (lr 1e-3)
    assert_same_training_state(ddp, single, weights_atol=1e-5, moments_rtol=1e-3)


def two_voice_recording(folder: Path, rng: np.random.Generator) -> None:
    """A recording of two synthetic voices taking 2 s turns, with its reference RTTM."""
    from synthetic import utterance

    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    voices = spread_voices(2, rng)
    turns = [utterance(voices[k % 2], 2.0, rng) for k in range(8)]
    sf.write(folder / "talk.wav", np.concatenate(turns), 16000)
    (folder / "talk.rttm").write_text("".join(f"SPEAKER talk 1 {2.0 * k:.3f} 2.000 <NA> <NA> s{k % 2} <NA> <NA>\n"
                                              for k in range(8)))


def test_a_run_is_measured_on_each_held_out_set_and_keeps_the_best_mean(voices, few_voices, tmp_path):
    two_voice_recording(tmp_path / "clips", np.random.default_rng(3))
    config = dataclasses.replace(WAVE_CONFIG, steps=4, val_every=2)
    summary = train(list_dataset(few_voices), list_dataset(voices / "new"), tmp_path / "run", RESUME_ENCODER,
                    config, cache_dir=tmp_path / "cache", more_val=[("others", list_dataset(few_voices))],
                    val_rooms=True, val_clips=tmp_path / "clips")
    figures = summary["metrics"]
    sets = {k: v for k, v in figures.items() if k.startswith("eer_") and k != "eer_mean"}
    assert set(sets) == {"eer_val", "eer_others", "eer_rooms", "eer_clips"}
    assert figures["eer_mean"] == pytest.approx(np.mean(list(sets.values())))
    # `eer` is the --val set's, beside its speakers and pair accuracy, as validate and the model card say it
    assert figures["eer"] == figures["eer_val"] and figures["speakers"] == 8
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    means = [r["val_eer_mean"] for r in log if "val_eer_mean" in r]
    assert len(means) == 2 and load_checkpoint(tmp_path / "run" / "best.pt")["metrics"]["eer_mean"] == min(means)
    assert summary["best_eer"] == min(means)


def test_validate_reports_each_further_set_and_their_mean(diarize, succeeds, voices, few_voices, tiny_model, tmp_path):
    two_voice_recording(tmp_path / "clips", np.random.default_rng(3))
    result = diarize("validate", voices / "new", "--model", tiny_model, "--device", "cpu", "--cache", tmp_path,
                     "--also", few_voices, "--rooms", "--clips", tmp_path / "clips")
    succeeds(result)
    for line in (f"on {few_voices.name}", "on rooms", "on clips", "mean EER"):
        assert line in result.stdout
    # a calibration read on few voices is said to be less sure
    assert "calibration: merge at" in result.stdout
    assert "read on only 8 speakers" in " ".join(result.stderr.split())


@pytest.mark.parametrize("name", ["val", "mean"])
def test_a_further_set_named_as_another_set_is_refused(diarize, fails_cleanly, voices, tiny_model, tmp_path, name):
    fails_cleanly(diarize("validate", voices / "new", "--model", tiny_model, "--device", "cpu", "--cache", tmp_path,
                          "--also", tmp_path / name), f"--also {tmp_path / name}", f"eer_{name}")


def test_clips_with_one_speaker_each_are_refused_as_unscorable(diarize, fails_cleanly, voices, tiny_model, tmp_path):
    import soundfile as sf

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):  # two recordings, two speakers in all, but never two in one recording
        sf.write(clips / f"{name}.wav", np.random.default_rng(0).normal(0, 0.1, 64000).astype(np.float32), 16000)
        (clips / f"{name}.rttm").write_text(f"SPEAKER {name} 1 0.000 4.000 <NA> <NA> s{name} <NA> <NA>\n")
    fails_cleanly(diarize("validate", voices / "new", "--model", tiny_model, "--device", "cpu", "--cache", tmp_path,
                          "--clips", clips), "no recording with two speakers")


def test_the_clean_and_edge_shares_of_augmentation_are_kept_with_the_run_and_bounded(diarize, succeeds, few_voices, tmp_path):
    succeeds(diarize("train", few_voices, "--out", tmp_path / "run", "--steps", "1", "--augment",
                     "--augment-clean", "0.6", "--augment-edges", "0.3", *TINY_CLI))
    ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["train_config"]["augment"] and ckpt["train_config"]["augment_clean"] == 0.6
    assert ckpt["train_config"]["augment_edges"] == 0.3
    result = diarize("train", few_voices, "--out", tmp_path / "other", "--steps", "1", "--augment",
                     "--augment-clean", "1.5", *TINY_CLI)
    assert result.exit_code == 2 and "--augment-clean" in result.output  # a usage error, before any work
    assert not (tmp_path / "other" / "last.pt").exists()
    # without them, the shares measured best in fine-tuning the bundled encoder
    succeeds(diarize("train", few_voices, "--out", tmp_path / "plain", "--steps", "1", "--augment", *TINY_CLI))
    ckpt = torch.load(tmp_path / "plain" / "last.pt", map_location="cpu", weights_only=False)
    assert (ckpt["train_config"]["augment_clean"], ckpt["train_config"]["augment_edges"]) == (0.75, 0.5)


def test_a_resume_without_steps_keeps_the_runs_own_length(diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    run = tmp_path / "run"
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "2", *TINY_CLI))
    # not the default 3,000 steps: the run asked for 2 and has them
    fails_cleanly(diarize("train", few_voices, "--resume", run / "last.pt", *TINY_CLI), "at step 2 already")


def test_force_leaves_the_old_run_alone_when_the_new_command_cannot_start(diarize, fails_cleanly, succeeds,
                                                                          few_voices, tmp_path):
    run = tmp_path / "run"
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "1", *TINY_CLI))
    fails_cleanly(diarize("train", few_voices, "--out", run, "--steps", "1", "--val-speakers", "6", "--force",
                          *TINY_CLI), "6")
    assert (run / "best.pt").exists() and (run / "last.pt").exists()


def test_a_validation_set_of_one_speaker_is_refused(diarize, fails_cleanly, few_voices, tiny_model, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(next(p for p in sorted(few_voices.iterdir()) if p.is_dir()), one / "only")
    fails_cleanly(diarize("validate", one, "--model", tiny_model, "--device", "cpu", "--cache", tmp_path / "c"),
                  "at least 2")
    fails_cleanly(diarize("train", few_voices, "--val", one, "--out", tmp_path / "run", "--steps", "2",
                          *TINY_CLI), "at least 2")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_validate_names_the_files_it_could_not_read(diarize, succeeds, few_voices, tiny_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(few_voices, data)
    broken = next(p for p in sorted(data.iterdir()) if p.is_dir()) / "broken.wav"
    broken.write_bytes(b"not audio at all")
    stderr = succeeds(diarize("validate", data, "--model", tiny_model, "--device", "cpu", "--cache", tmp_path / "c"))
    assert "skipped 1 unreadable file(s)" in stderr and "broken.wav" in stderr


def test_force_keeps_the_old_run_when_a_check_fails_and_checks_come_before_the_features(
        diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    run, one = tmp_path / "run", tmp_path / "one"
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "1", *TINY_CLI))
    kept = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "log.jsonl")}
    shutil.copytree(next(p for p in sorted(few_voices.iterdir()) if p.is_dir()), one / "someone")
    detector = Path(__file__).resolve().parent.parent / "models" / "overlap" / "diarize-overlap.pt"
    for args, named in ((("--augment", "--rir-dir", tmp_path / "nowhere"), "--rir-dir"),
                        (("--init", detector), "an overlap detector"),
                        (("--val", one), "1 speaker")):
        fails_cleanly(diarize("train", few_voices, "--out", run, "--steps", "1", "--force", "--cache",
                              tmp_path / "features", *args, *TINY_CLI), named)
        assert {name: (run / name).read_bytes() for name in kept} == kept
        assert not (tmp_path / "features").exists()  # said before minutes of features on a real corpus


def test_a_resume_is_not_made_shorter_and_an_overlap_run_is_not_resumed_as_an_encoder(
        diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        def stop_after_two(event: str, **info) -> None:
            if event == "step" and info["step"] == 2:
                raise KeyboardInterrupt
        train(list_dataset(few_voices), None, run, RESUME_ENCODER,
              TrainConfig(steps=6, speakers_per_batch=2, windows_per_speaker=2), hook=stop_after_two)
    result = diarize("train", few_voices, "--resume", run / "last.pt", "--steps", "4", *TINY_CLI)
    fails_cleanly(result, "--steps 4", "6 steps")
    assert result.exit_code == 2 and load_checkpoint(run / "last.pt")["step"] == 2
    detector = Path(__file__).resolve().parent.parent / "models" / "overlap" / "diarize-overlap.pt"
    result = diarize("train", few_voices, "--resume", detector, *TINY_CLI)
    fails_cleanly(result, "holds no speaker-encoder training run")
    assert result.exit_code == 2


def test_a_run_too_small_to_calibrate_says_so_once_and_logs_even_without_validation(few_voices, tmp_path):
    said, rounds = [], []

    def hook(event: str, **info) -> None:
        if event == "warning":
            said.append(info["message"])
        if event in ("validating", "calibrating", "calibrated", "val"):
            rounds.append(event)
    config = TrainConfig(steps=3, speakers_per_batch=2, windows_per_speaker=2, val_every=1)
    train(list_dataset(few_voices), None, tmp_path / "run", RESUME_ENCODER, config, hook=hook)
    assert len([m for m in said if m.startswith("no speaker-count calibration")]) == 1  # not once a round
    assert rounds == ["calibrating", "calibrated"] * 3  # no validation round is announced without validation
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3] and "loss" in log[0]


def test_a_validation_set_too_short_to_calibrate_on_leaves_the_calibration_to_training_speakers(few_voices,
                                                                                                 tmp_path):
    """few_voices has 6 speakers but 2 pieces of speech each, under the 4 a calibration reads: the training
    speakers (5 x 4 utterances of 2 s) calibrate the model, and the run says so, instead of no calibration."""
    rng = np.random.default_rng(3)
    write_speakers(tmp_path / "train", [random_voice(rng) for _ in range(5)], 4, rng, seconds=(2.0, 2.2))
    said = []
    hook = lambda event, **info: said.append(info["message"]) if event == "warning" else None
    config = TrainConfig(steps=1, speakers_per_batch=2, windows_per_speaker=2, val_every=1)
    train(list_dataset(tmp_path / "train"), list_dataset(few_voices), tmp_path / "run", RESUME_ENCODER, config,
          hook=hook)
    assert any("read on training speakers" in m for m in said)
    assert not any(m.startswith("no speaker-count calibration") for m in said)
    assert load_model(tmp_path / "run" / "best.pt", device="cpu").calibration.speakers == 5


def test_options_a_run_would_not_use_are_named(diarize, fails_cleanly, few_voices, tmp_path):
    (tmp_path / "afile").write_text("")  # a --cache under a file stops the command right after its warnings
    result = diarize("train", few_voices, "--out", tmp_path / "run", "--rir-dir", tmp_path, "--val-rooms", "--val",
                     few_voices, "--val-speakers", "2", "--cache", tmp_path / "afile" / "cache", *TINY_CLI)
    fails_cleanly(result, "--cache")
    said = " ".join(result.stderr.split())
    assert "not used: --rir-dir, --val-speakers (see" in said  # --rir-dir needs --augment; --val was given
    assert "is DATA itself" in said


def test_a_missing_folder_or_set_is_named_with_its_option_before_any_audio_is_read(diarize, fails_cleanly,
                                                                                   few_voices, tmp_path):
    none, afile = tmp_path / "none", tmp_path / "afile"
    afile.write_text("")
    for args, said in ((["train", few_voices, "--val-clips", none], f"--val-clips {none}: no such folder"),
                       (["train", few_voices, "--val-clips", afile], f"--val-clips {afile}: not a folder"),
                       (["train", few_voices, "--also", none], f"--also {none}: no such file or folder"),
                       (["train", few_voices, "--val", none], f"--val {none}: no such file or folder"),
                       (["validate", few_voices, "--clips", none], f"--clips {none}: no such folder")):
        result = diarize(*args, "--out" if args[0] == "train" else "--json", tmp_path / "run",
                         *(TINY_CLI if args[0] == "train" else ()))
        fails_cleanly(result, said)
        assert result.exit_code == 2 and not (tmp_path / "run").exists()  # no feature cache was begun


def test_init_names_only_the_architecture_options_that_differ_from_the_models(diarize, succeeds, few_voices,
                                                                              tiny_model, tmp_path):
    stderr = succeeds(diarize("train", few_voices, "--init", tiny_model, "--out", tmp_path / "run", "--steps", "1",
                              "--lstm-hidden", "16", "--outputs", "9", "--speakers-per-batch", "2",
                              "--windows-per-speaker", "2", "--device", "cpu"))  # the model: 16 units, 8 outputs
    said = " ".join(stderr.split())
    assert "the model's architecture is kept: --outputs" in said and "--lstm-hidden" not in said


def test_a_val_manifest_of_the_training_files_is_warned_of(diarize, succeeds, few_voices, tmp_path):
    files = sorted(f for f in few_voices.rglob("*.wav"))
    manifest = tmp_path / "val.tsv"  # the same files as DATA, listed another way
    manifest.write_text("path\tspeaker\n" + "".join(f"{f}\t{f.parent.parent.name}\n" for f in files))
    stderr = succeeds(diarize("train", few_voices, "--val", manifest, "--out", tmp_path / "run", "--steps", "1",
                              *TINY_CLI))
    assert f"{len(files)} of its {len(files)} files are also in DATA" in " ".join(stderr.split())


def test_a_run_is_not_resumed_on_other_data(diarize, fails_cleanly, succeeds, few_voices, tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(few_voices, other)
    next(p for p in sorted(other.iterdir()) if p.is_dir()).rename(other / "someone-else")
    succeeds(diarize("train", few_voices, "--out", run, "--steps", "1", *TINY_CLI))
    result = diarize("train", other, "--resume", run / "last.pt", "--steps", "2", *TINY_CLI)
    fails_cleanly(result, "other training data")
    assert result.exit_code == 2  # a command line that cannot work, as --steps below the run's length is
    moved = tmp_path / "moved"  # the same files elsewhere are the same data
    shutil.copytree(few_voices, moved)
    succeeds(diarize("train", moved, "--resume", run / "last.pt", "--steps", "2", *TINY_CLI))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_feature_cache_is_built_says_so_and_leaves_no_cache(diarize, few_voices, tmp_path,
                                                                             monkeypatch, how):
    import diarize.data as data

    def interrupted(path):  # the first file read is where Ctrl-C or SIGTERM lands
        os.kill(os.getpid(), how)
        time.sleep(5)  # the signal arrives well before this ends
    monkeypatch.setattr(data, "_features", interrupted)
    result = diarize("train", few_voices, "--out", tmp_path / "run", "--steps", "1", *TINY_CLI)
    assert result.exit_code == 128 + how  # 130, 143: as the shell reports death by that signal
    assert "interrupted before training began" in result.stderr
    assert not list((tmp_path / "run").rglob("*.tmp")) and not list((tmp_path / "run").rglob("index.json"))
    assert not (tmp_path / "run").exists()  # nor the folders made for the cache


@pytest.mark.parametrize("command", ["train", "train-overlap"])
def test_an_out_folder_below_a_file_is_refused_naming_the_option(diarize, fails_cleanly, few_voices, tmp_path,
                                                                command):
    (tmp_path / "afile").write_text("")
    given = ("--val", few_voices) if command == "train-overlap" else ()
    fails_cleanly(diarize(command, few_voices, *given, "--out", tmp_path / "afile" / "run", "--steps", "1"),
                  "--out", "afile is a file, not a folder")


def test_quiet_training_prints_only_warnings_and_errors(diarize, succeeds, few_voices, tmp_path):
    args = ("--steps", "2", "--val-speakers", "2", "--val-every", "1", *TINY_CLI)
    loud = succeeds(diarize("train", few_voices, "--out", tmp_path / "loud", *args))
    assert "step 1: val EER" in loud and "done: 2 steps" in loud
    quiet = succeeds(diarize("train", few_voices, "--out", tmp_path / "quiet", "--quiet", *args))
    assert all(line.startswith("warning:") or line.startswith("  ") for line in quiet.splitlines()), quiet
    assert (tmp_path / "quiet" / "best.pt").exists()


def test_validation_that_fails_for_want_of_files_names_the_unreadable_ones(diarize, fails_cleanly, make_audio,
                                                                          tiny_model, tmp_path):
    rows = ["path\tspeaker"]
    for name in "ab":
        make_audio(f"{name}0.wav")
        rows += [f"{name}0.wav\t{name}", f"{name}1.wav\t{name}"]  # the second of each is missing
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    fails_cleanly(diarize("validate", tmp_path / "m.tsv", "--model", tiny_model, "--device", "cpu", "--cache",
                          tmp_path / "c"), "2 of 4 files could not be read", "a1.wav")


def test_validate_json_on_stdout_holds_the_json_alone(diarize, few_voices, tiny_model, tmp_path):
    result = diarize("validate", few_voices, "--model", tiny_model, "--device", "cpu", "--cache", tmp_path,
                     "--json", "-")
    assert result.exit_code == 0, result.output
    assert "eer" in json.loads(result.stdout)
    assert "EER" in result.stderr and not (tmp_path / "-").exists()
