"""What overlap handling promises: frame classes read from an RTTM, a detector that scores a recording of
any length frame by frame, that learns overlap from simulated conversations, and a pipeline that gives
overlapped speech a second speaker where turns meet, unless told not to."""
import os
import signal
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from synthetic import spread_voices, utterance

from diarize.hparams import N_MELS
from diarize.overlap import (BLOCK_FRAMES, OverlapDetector, OverlapTrainConfig, frame_classes, load_detector,
                             save_detector, train_detector)

SR = 16000


def conversation(folder, name: str, rng: np.random.Generator, seconds: float = 12.0) -> None:
    """Two synthetic voices alternating in 1.5 s turns; every other turn starts 0.6 s before the previous ends."""
    voices = spread_voices(2, rng)
    wave = np.zeros(int(seconds * SR) + SR, np.float32)
    lines, t, k = [], 0.2, 0
    while t + 1.5 < seconds:
        start = t
        part = utterance(voices[k % 2], 1.5, rng)
        wave[int(start * SR): int(start * SR) + len(part)] += part
        lines.append(f"SPEAKER {name} 1 {start:.3f} {len(part) / SR:.3f} <NA> <NA> s{k % 2} <NA> <NA>\n")
        t = start + len(part) / SR + (-0.6 if k % 2 == 0 else 0.4)
        k += 1
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{name}.wav", wave[: int(seconds * SR)], SR)
    (folder / f"{name}.rttm").write_text("".join(lines))


def test_frame_classes_count_the_speakers_of_each_10_ms(tmp_path):
    (tmp_path / "r.rttm").write_text("SPEAKER r 1 0.10 0.30 <NA> <NA> a <NA> <NA>\n"
                                     "SPEAKER r 1 0.30 0.20 <NA> <NA> b <NA> <NA>\n"
                                     "SPEAKER r 1 0.35 0.05 <NA> <NA> c <NA> <NA>\n")
    classes = frame_classes(tmp_path / "r.rttm", 60)
    assert classes[:10].tolist() == [0] * 10 and classes[10:30].tolist() == [1] * 20
    assert classes[30:40].tolist() == [2] * 10 and classes[40:50].tolist() == [1] * 10  # three count as two
    assert classes[50:].tolist() == [0] * 10


@pytest.mark.parametrize("frames", [1, 37, BLOCK_FRAMES, 2 * BLOCK_FRAMES + 13])
def test_the_detector_scores_every_frame_of_a_recording_of_any_length(frames):
    torch.manual_seed(0)
    detector = OverlapDetector()
    p = detector.overlap_probability(torch.randn(frames, N_MELS))
    assert p.shape == (frames,) and ((0 <= p) & (p <= 1)).all()


def test_a_detector_file_keeps_its_weights_and_threshold_and_is_told_from_an_encoder(tmp_path, tiny_model):
    from diarize.model import ModelError

    detector = OverlapDetector()
    detector.threshold = 0.35
    save_detector(tmp_path / "d.pt", detector)
    loaded = load_detector(tmp_path / "d.pt")
    x = torch.randn(300, N_MELS)
    assert loaded.threshold == 0.35 and np.allclose(loaded.overlap_probability(x), detector.overlap_probability(x))
    with pytest.raises(ModelError, match="not an overlap detector"):
        load_detector(tiny_model)


def test_training_learns_to_find_overlap_in_conversations_it_never_heard(tmp_path):
    """Measured: F1 0.8-0.9 after 150 steps on these synthetic conversations; an untrained detector's best F1
    is the share of overlap (it marks everything)."""
    rng = np.random.default_rng(0)
    for i in range(6):
        conversation(tmp_path / "train", f"c{i}", rng)
    for i in range(2):
        conversation(tmp_path / "val", f"v{i}", rng)
    best = train_detector([tmp_path / "train"], [tmp_path / "val"], tmp_path / "run",
                          OverlapTrainConfig(steps=150, batch=8, val_every=75))
    assert best["overlap_share"] < 0.3
    assert best["f1"] > 0.6 and best["f1_precision"] > 0.5 and best["f1_recall"] > 0.5
    # the working threshold: the F1's, raised until 3/4 of what it marks is overlapped (where any gets there)
    assert best["threshold"] >= best["f1_threshold"]
    assert best["threshold_precision"] >= 0.75 or best["threshold"] == best["f1_threshold"]
    assert load_detector(tmp_path / "run" / "best.pt").threshold == best["threshold"]


@pytest.mark.parametrize("how", ["sigint", "keyboard-interrupt", "while-a-batch-is-drawn"])
def test_an_interrupted_detector_run_resumes_to_the_weights_of_an_unbroken_one(tmp_path, monkeypatch, how):
    import diarize.overlap
    from diarize.model import load_checkpoint
    from diarize.train import TrainingInterrupted

    rng = np.random.default_rng(1)
    conversation(tmp_path / "train", "c0", rng)
    conversation(tmp_path / "val", "v0", rng)
    config = OverlapTrainConfig(steps=6, batch=2, val_every=3)
    train_detector([tmp_path / "train"], [tmp_path / "val"], tmp_path / "unbroken", config)

    def interrupt(event: str, **info) -> None:
        if event == "step" and info["step"] == 4 and how != "while-a-batch-is-drawn":
            if how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)  # the run stops after this step
            else:
                raise KeyboardInterrupt

    if how == "while-a-batch-is-drawn":  # a second Ctrl-C inside step 5, before any of it is applied
        draw, calls = diarize.overlap._chunks, []

        def drawn(*args, **kwargs):
            calls.append(1)
            if len(calls) == 6:  # the class-weight sample, then steps 1 to 5
                raise KeyboardInterrupt
            return draw(*args, **kwargs)

        monkeypatch.setattr(diarize.overlap, "_chunks", drawn)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as interrupted:
        train_detector([tmp_path / "train"], [tmp_path / "val"], tmp_path / "run", config, hook=interrupt)
    assert signal.getsignal(signal.SIGINT) == handler
    monkeypatch.undo()
    last = tmp_path / "run" / "last.pt"
    assert interrupted.value.args[0] == last and load_checkpoint(last)["step"] == 4
    train_detector([tmp_path / "train"], [tmp_path / "val"], tmp_path / "run", config, resume=last)
    a, b = load_checkpoint(last), load_checkpoint(tmp_path / "unbroken" / "last.pt")
    assert a["step"] == b["step"] == 6
    for name, weights in a["state_dict"].items():
        assert torch.allclose(weights, b["state_dict"][name], atol=1e-6), name
    assert (tmp_path / "run" / "log.jsonl").read_text().count("\n") == 2  # rounds at steps 3 and 6, once each
    with pytest.raises(ValueError, match="at step 6 already"):
        train_detector([tmp_path / "train"], [tmp_path / "val"], tmp_path / "run", config, resume=last)
    with pytest.raises(ValueError, match="other recordings"):
        train_detector([tmp_path / "val"], [tmp_path / "val"], tmp_path / "run",
                       OverlapTrainConfig(steps=9, batch=2, val_every=3), resume=last)


def test_train_overlap_continues_a_run_only_when_asked(diarize, fails_cleanly, succeeds, tiny_model, tmp_path):
    rng = np.random.default_rng(2)
    conversation(tmp_path / "train", "c0", rng)
    conversation(tmp_path / "val", "v0", rng)
    common = (tmp_path / "train", "--val", tmp_path / "val", "--batch", "2", "--val-every", "2")
    succeeds(diarize("train-overlap", *common, "--out", tmp_path / "run", "--steps", "2"))
    fails_cleanly(diarize("train-overlap", *common, "--out", tmp_path / "run", "--steps", "4"),
                  "holds a training run", "--resume")
    warned = succeeds(diarize("train-overlap", *common, "--resume", tmp_path / "run" / "last.pt", "--steps", "4",
                              "--lr", "0.1"))
    assert "ignored on --resume" in warned and "--lr" in warned
    from diarize.model import load_checkpoint
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    result = diarize("train-overlap", *common, "--resume", tiny_model)
    fails_cleanly(result, "no overlap-detector training run")
    assert result.exit_code == 2  # a command line that cannot work, as train says of a detector's run
    # the detector trained is the one cluster uses when named, and named as what it is
    audio = tmp_path / "val" / "v0.wav"
    result = diarize("cluster", audio, "--out", "-", "--overlap-model", tmp_path / "run" / "best.pt")
    succeeds(result)
    assert result.stdout.startswith("SPEAKER v0 1 ")
    fails_cleanly(diarize("cluster", audio, "--out", "-", "--overlap-model", tmp_path / "none.pt"), "none.pt")
    fails_cleanly(diarize("cluster", audio, "--out", "-", "--model", tmp_path / "run" / "best.pt"),
                  "--overlap-model")


def test_sigterm_while_the_recordings_are_read_says_so(diarize, tmp_path, monkeypatch):
    import diarize.overlap as overlap

    rng = np.random.default_rng(3)
    conversation(tmp_path / "train", "c0", rng)
    conversation(tmp_path / "val", "v0", rng)

    def terminated(folders, hook):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives well before this ends
    monkeypatch.setattr(overlap, "conversations", terminated)
    result = diarize("train-overlap", tmp_path / "train", "--val", tmp_path / "val", "--out", tmp_path / "run")
    assert result.exit_code == 143 and "interrupted before training began: nothing to resume" in result.stderr
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the command's handler is gone with it


def test_train_overlap_names_a_missing_or_wrong_folder(diarize, fails_cleanly, tmp_path):
    rng = np.random.default_rng(4)
    conversation(tmp_path / "train", "c0", rng)
    (tmp_path / "afile").write_text("")
    for val in (tmp_path / "nowhere", tmp_path / "afile"):
        result = diarize("train-overlap", tmp_path / "train", "--val", val, "--out", tmp_path / "run")
        error = fails_cleanly(result, str(val))
        assert ("no such folder" if val.name == "nowhere" else "not a folder") in error
        assert result.stderr == error + "\n"  # that line alone, with no blank line after it
    # validated on its own training recordings: said (an --out below a file stops the run right after)
    result = diarize("train-overlap", tmp_path / "train", "--val", tmp_path / "train", "--out",
                     tmp_path / "afile" / "run")
    fails_cleanly(result, "--out")
    assert "is also DATA: validated on recordings it trains on" in " ".join(result.stderr.split())
    (tmp_path / "empty").mkdir()
    fails_cleanly(diarize("train-overlap", tmp_path / "train", "--val", tmp_path / "empty"), "no recordings")
    # validation recordings with no overlapped speech: an F1 of nothing cannot choose the model
    (tmp_path / "quiet").mkdir()
    sf.write(tmp_path / "quiet" / "q.ogg", np.zeros(3 * SR, np.float32), SR)  # any format cluster reads
    (tmp_path / "quiet" / "q.rttm").write_text("SPEAKER q 1 0.500 1.000 <NA> <NA> s0 <NA> <NA>\n")
    fails_cleanly(diarize("train-overlap", tmp_path / "train", "--val", tmp_path / "quiet", "--out",
                          tmp_path / "run", "--steps", "1"), "no overlapped speech")
    assert not (tmp_path / "run").exists()
