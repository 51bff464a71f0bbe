"""What the training data layer promises: speakers found in a folder tree or a manifest, whole speakers
held out, log-mels computed once and cached (unreadable files skipped and listed), and batches of
S speakers x M windows."""
import numpy as np
import pytest
import soundfile as sf
import torch

import diarize.data
from diarize.data import (EXTRA_FRAMES, BatchSampler, DataError, Dataset, FeatureCache, build_cache,
                          list_dataset, split_speakers, utterance_windows)
from diarize.hparams import N_MELS, WINDOW_FRAMES

SR = 16000


def tone(path, seconds=0.8, f0=220.0):
    """A harmonic tone file (so the silence trimming keeps all of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t), SR)
    return path


def test_a_folder_has_one_subfolder_per_speaker_with_audio_at_any_depth(tmp_path):
    files = ["alice/video1/utt1.wav", "alice/video2/deep/utt2.FLAC", "bob/utt1.wav"]
    hidden = ["alice/._utt1.wav", "alice/.cache/utt3.wav", ".trash/utt4.wav"]  # macOS's copies, tools' own
    for name in files + hidden + ["bob/notes.txt", "stray.wav", "carol/empty/.keep"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    data = list_dataset(tmp_path)
    assert data.paths == [tmp_path / f for f in files]  # not notes.txt, hidden files or a file outside speakers
    assert data.speakers == ["alice", "alice", "bob"]
    assert len(data) == 3


def test_a_folder_without_audio_in_speaker_folders_is_refused(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "loose.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"no audio files in speaker subfolders \(1 directly in it: put each"):
        list_dataset(tmp_path)
    (tmp_path / "loose.wav").unlink()
    with pytest.raises(DataError, match="no audio files in speaker subfolders$"):
        list_dataset(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        list_dataset(tmp_path / "missing")


@pytest.mark.parametrize("suffix, sep", [(".tsv", "\t"), (".csv", ",")])
def test_manifest_paths_are_relative_to_the_manifest_folder(tmp_path, monkeypatch, suffix, sep):
    manifest = tmp_path / "lists" / f"train{suffix}"
    manifest.parent.mkdir()
    absolute = tmp_path / "elsewhere" / "c.wav"
    rows = [["path", "speaker", "duration_s"], ["clips/a.wav", "alice", "1.0"], ["../b.wav", "bob", "2.0"],
            [str(absolute), "carol", "3.0"]]
    manifest.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the working folder plays no part
    data = list_dataset(manifest)
    assert data.paths == [manifest.parent / "clips/a.wav", manifest.parent / "../b.wav", absolute]
    assert data.speakers == ["alice", "bob", "carol"]


def test_a_manifest_without_path_and_speaker_columns_is_refused(tmp_path):
    manifest = tmp_path / "train.tsv"
    manifest.write_text("file\tlabel\na.wav\talice\n")
    with pytest.raises(DataError, match="'path' and 'speaker' columns"):
        list_dataset(manifest)
    semicolons = tmp_path / "train.csv"  # a spreadsheet set to another locale separates with semicolons
    semicolons.write_text("path;speaker\na.wav;alice\n")
    with pytest.raises(DataError, match="separated by commas .* its header reads 'path;speaker'"):
        list_dataset(semicolons)


def test_a_manifest_header_is_read_whatever_its_case_and_spaces(tmp_path):
    manifest = tmp_path / "train.csv"
    manifest.write_text("Path, Speaker\na.wav, alice\nb.wav,bob \n")  # as a spreadsheet may write them
    data = list_dataset(manifest)
    assert data.speakers == ["alice", "bob"] and data.paths == [tmp_path / "a.wav", tmp_path / "b.wav"]


def test_a_manifest_saved_by_a_spreadsheet_is_read_and_a_header_alone_is_said_to_list_nothing(tmp_path):
    manifest = tmp_path / "train.csv"
    manifest.write_bytes("path,speaker\na.wav,alice\n".encode("utf-8-sig"))  # "CSV UTF-8": a byte-order mark first
    assert list_dataset(manifest).speakers == ["alice"]
    manifest.write_text("path,speaker\n")
    with pytest.raises(DataError, match="lists no files"):
        list_dataset(manifest)
    manifest.write_text("")
    with pytest.raises(DataError, match="the manifest is empty"):
        list_dataset(manifest)


def test_split_speakers_holds_out_whole_speakers(tmp_path):
    speakers = [f"spk{i}" for i in range(6) for _ in range(3)]
    data = Dataset([tmp_path / f"{s}_{k}.wav" for k, s in enumerate(speakers)], speakers)
    train, val = split_speakers(data, n_val=2, seed=3)
    assert len(set(val.speakers)) == 2 and len(set(train.speakers)) == 4
    assert not set(train.speakers) & set(val.speakers)
    assert sorted(train.paths + val.paths) == sorted(data.paths)  # every file kept, with its speaker
    for part in (train, val):
        assert all(p.name.startswith(s + "_") for p, s in zip(part.paths, part.speakers))
    again = split_speakers(data, n_val=2, seed=3)
    assert again[1].paths == val.paths  # the seed decides
    for n_val, said in ((6, "leaves 0 to train on"), (5, "leaves 1 to train on"), (8, "is more than there are")):
        with pytest.raises(DataError, match=f"--val-speakers {n_val}: holding out {n_val} of the 6 speakers {said}"):
            split_speakers(data, n_val=n_val)  # training needs 2 speakers: the hold-out is named as the cause
    assert len(set(split_speakers(data, n_val=4)[0].speakers)) == 2


@pytest.fixture
def corpus(tmp_path):
    """Two speakers' tone files, one file that is not audio, one empty file."""
    root = tmp_path / "corpus"
    tone(root / "alice" / "a1.wav", 0.8, 150)
    tone(root / "alice" / "a2.wav", 0.5, 160)
    tone(root / "bob" / "b1.wav", 0.6, 300)
    (root / "bob" / "broken.wav").write_text("this is not audio")
    sf.write(root / "bob" / "empty.wav", np.zeros(0), SR)
    return root


def test_build_cache_skips_unreadable_files_and_lists_each_with_its_reason(corpus, tmp_path):
    events = []
    cache = build_cache(list_dataset(corpus), tmp_path / "cache", hook=lambda *a, **k: events.append((a, k)))
    assert cache.speakers == ["alice", "alice", "bob"]
    assert len(cache.skipped) == 2
    broken, empty = sorted(cache.skipped)
    assert str(corpus / "bob" / "broken.wav") in broken and "not readable audio" in broken
    assert str(corpus / "bob" / "empty.wav") in empty and "no audio" in empty
    # centred frames: 1 + samples // 160 for each file
    assert cache.lengths.tolist() == [81, 51, 61]
    assert cache.offsets.tolist() == [0, 81, 132]
    assert cache.frames.shape == (193, N_MELS) and cache.frames.dtype == np.float16
    assert events[-1] == (("features",), {"completed": 5, "total": 5})


def test_a_second_build_reuses_the_cache_without_recomputing(corpus, tmp_path, monkeypatch):
    data = list_dataset(corpus)
    first = build_cache(data, tmp_path / "cache")

    def must_not_run(path):
        raise AssertionError(f"features recomputed for {path}")

    monkeypatch.setattr(diarize.data, "_features", must_not_run)
    second = build_cache(data, tmp_path / "cache")
    assert np.array_equal(np.asarray(second.frames), np.asarray(first.frames))
    assert second.lengths.tolist() == first.lengths.tolist() and second.speakers == first.speakers
    assert second.skipped == first.skipped
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_changed_file_is_not_served_from_the_cache(corpus, tmp_path, monkeypatch):
    data = list_dataset(corpus)
    build_cache(data, tmp_path / "cache")
    tone(corpus / "alice" / "a2.wav", 0.9, 160)  # re-recorded: longer
    computed = []
    features = diarize.data._features
    monkeypatch.setattr(diarize.data, "_features", lambda p: computed.append(p) or features(p))
    cache = build_cache(data, tmp_path / "cache")
    assert len(computed) == 5
    assert cache.lengths.tolist() == [81, 91, 61]


def synthetic_cache(lengths: dict[str, list[int]]) -> FeatureCache:
    """A cache whose frame rows hold their own row number, so a window shows where it was cut from."""
    speakers = [s for s, ls in lengths.items() for _ in ls]
    sizes = np.array([n for ls in lengths.values() for n in ls])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    frames = np.repeat(np.arange(sizes.sum(), dtype=np.float16)[:, None], N_MELS, axis=1)
    return FeatureCache(frames, offsets, sizes, speakers)


def test_batches_hold_m_windows_of_each_of_s_speakers():
    cache = synthetic_cache({"alice": [100, 60], "bob": [45], "carol": [30, 39], "dave": [80]})
    sampler = BatchSampler(cache)
    assert sampler.speakers == ["alice", "bob", "dave"]
    x, labels = sampler.batch(np.random.default_rng(0), n_speakers=3, n_windows=5)
    span = WINDOW_FRAMES + EXTRA_FRAMES
    assert x.shape == (15, span, N_MELS) and x.dtype == torch.float32
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert all(len(set(labels[i:i + 5].tolist())) == 1 for i in range(0, 15, 5))  # M in a row per speaker
    for window, label in zip(x[:, :, 0].numpy(), labels.tolist()):
        start = int(window[0])
        f = int(np.searchsorted(cache.offsets, start, side="right") - 1)  # the file it was cut from
        assert cache.speakers[f] == sampler.speakers[label]
        end = cache.offsets[f] + cache.lengths[f]
        take = min(span, cache.lengths[f])
        assert window[:take].tolist() == list(range(start, start + take)) and start + take <= end
        assert (window[take:] == window[take - 1]).all()  # a short file is padded with its last frame


def test_speakers_without_one_full_window_are_dropped_and_listed():
    sampler = BatchSampler(synthetic_cache({"alice": [100], "bob": [39, 20], "carol": [40]}))
    assert sampler.dropped == ["bob"]
    assert sampler.speakers == ["alice", "carol"]
    with pytest.raises(DataError, match="exceeds the 2 usable speakers"):
        sampler.batch(np.random.default_rng(0), n_speakers=3, n_windows=2)


def test_utterance_windows_are_evenly_spaced_and_a_short_utterance_is_padded():
    feats = np.repeat(np.arange(100, dtype=np.float32)[:, None], N_MELS, axis=1)
    w = utterance_windows(feats)
    assert w.shape == (4, WINDOW_FRAMES, N_MELS)
    assert w[:, 0, 0].tolist() == [0, 20, 40, 60]
    assert utterance_windows(feats, max_windows=2)[:, 0, 0].tolist() == [0, 60]
    short = utterance_windows(feats[:25])
    assert short.shape == (1, WINDOW_FRAMES, N_MELS) and (short[0, 25:] == 24).all()


def test_a_manifest_row_without_a_speaker_is_refused_naming_its_line(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tspeaker\na.wav\talice\nb.wav\n")
    with pytest.raises(DataError, match=r"m.tsv:3: a row needs both a path and a speaker"):
        list_dataset(manifest)


def test_holding_out_one_validation_speaker_is_refused(tmp_path):
    data = Dataset([tmp_path / f"{s}.wav" for s in "abc"], list("abc"))
    with pytest.raises(DataError, match="at least 2 speakers"):
        split_speakers(data, 1)


def test_an_interrupted_cache_build_leaves_no_temporary_file(corpus, tmp_path, monkeypatch):
    calls = []

    def interrupted(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path)

    real = diarize.data._features
    monkeypatch.setattr(diarize.data, "_features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(list_dataset(corpus), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_build_removes_what_a_killed_build_left_behind(corpus, tmp_path):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    data = list_dataset(corpus)
    build_cache(data, tmp_path / "cache")
    folder = next((tmp_path / "cache").iterdir())
    (folder / "index.json").unlink()  # as if the build had never finished
    orphan = folder / f"frames.f16.{int(gone.stdout)}.tmp"  # from a process that no longer exists
    orphan.write_bytes(b"partial")
    build_cache(data, tmp_path / "cache")
    assert not orphan.exists() and not list(folder.glob("*.tmp"))


def test_a_wave_cache_holds_the_samples_of_the_frames_a_feature_cache_keeps(tmp_path):
    path = tone(tmp_path / "alice" / "a.wav", seconds=1.0)
    sf.write(path, np.concatenate([np.zeros(8000), sf.read(path)[0], np.zeros(8000)]), SR)  # silence around
    data = list_dataset(tmp_path)
    mels, waves = build_cache(data, tmp_path / "cache"), build_cache(data, tmp_path / "cache", kind="wave")
    assert waves.frames.dtype == np.int16 and waves.frames.ndim == 1
    assert waves.lengths[0] == mels.lengths[0] * 160  # trimmed alike: 10 ms of samples a frame
    assert 0.95 < waves.lengths[0] / SR < 1.1  # the half-second silences are gone, the tone is kept


def test_speed_perturbation_makes_each_speaker_three_identities_of_resampled_windows():
    t = np.arange(64000) / SR
    tone_rows = (0.5 * np.sin(2 * np.pi * 500 * t) * 32767).astype(np.int16)
    cache = FeatureCache(np.concatenate([tone_rows, tone_rows]), np.array([0, 64000]), np.array([64000, 64000]),
                         ["alice", "bob"])
    sampler = BatchSampler(cache, span=4000, min_rows=4000, speeds=(0.9, 1.0, 1.1))
    assert sampler.identities == 6
    x, labels = sampler.batch(np.random.default_rng(0), n_speakers=6, n_windows=2)
    assert x.shape == (12, 4000) and sorted(set(labels.tolist())) == list(range(6))
    for window, label in zip(x.numpy(), labels.tolist()):
        peak = np.fft.rfftfreq(4000, 1 / SR)[np.abs(np.fft.rfft(window)).argmax()]
        assert peak == pytest.approx(500 * sampler.speeds[label % 3], abs=8)  # 1.1x faster: 550 Hz
