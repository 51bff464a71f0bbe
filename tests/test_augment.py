"""What training augmentation promises: speech put in rooms, noise and channels on the waveform, a batch's
speakers sharing each condition and each speaker heard under several, a fixed rendering for validation,
and the teacher and its distillation term."""
import numpy as np
import pytest
import soundfile as sf
import torch

from diarize.audio import log_mel
from diarize.augment import PRE_ROLL, SPAN, WINDOW_SAMPLES, Acoustics
from diarize.distill import Teacher, relational_loss, resemblyzer_weights
from diarize.hparams import WINDOW_FRAMES

SR = 16000


def speech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SPAN) / SR
    f0 = rng.uniform(100, 250, size=(n, 1))
    return (sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def acoustics(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aug")
    (folder / "rir").mkdir()
    (folder / "noise").mkdir()
    ir = np.exp(-np.arange(4000) / 600) * np.random.default_rng(0).standard_normal(4000)
    sf.write(folder / "rir" / "hall.wav", ir, SR)
    sf.write(folder / "noise" / "hum.wav", 0.1 * np.sin(2 * np.pi * 50 * np.arange(SR) / SR), SR)
    return Acoustics([folder / "rir"], [folder / "noise"], rooms=2, seed=0)


def test_rooms_are_simulated_and_read_and_noises_read(acoustics):
    assert len(acoustics.rooms) == 3  # two simulated, one file
    assert [len(r) for r in acoustics.rooms] == [4, 4, 1]  # simulated rooms have four talker positions
    assert all(abs(np.sum(ir ** 2) - 1) < 1e-3 for room in acoustics.rooms for ir in room)
    assert len(acoustics.noises) == 1


def test_a_batch_becomes_log_mel_windows_and_the_heard_waveforms(acoustics):
    waves = torch.from_numpy(speech_like(16, np.random.default_rng(1)))
    mels, heard = acoustics.batch(waves, n_windows=4, rng=np.random.default_rng(2))
    assert mels.shape == (16, WINDOW_FRAMES, 128) and heard.shape == (16, SPAN - PRE_ROLL)
    assert torch.isfinite(mels).all()


def test_clean_conditions_leave_the_windows_as_they_were(acoustics):
    clean = Acoustics(rooms=0, p_clean=1.0)
    waves = torch.from_numpy(speech_like(8, np.random.default_rng(1)))
    mels, heard = clean.batch(waves, n_windows=4, rng=np.random.default_rng(0))
    assert torch.allclose(mels, log_mel(waves[:, -WINDOW_SAMPLES:], center=False), atol=1e-4)


def test_every_condition_holds_several_speakers_and_every_speaker_is_heard_in_several(acoustics):
    """Condition c's windows share one channel: the band gains of window j of speaker i depend on (i + j) % 4."""
    acoustics.p_clean = 0.0
    waves = torch.from_numpy(np.repeat(speech_like(1, np.random.default_rng(3)), 16, axis=0))  # one voice
    mels, _ = acoustics.batch(waves, n_windows=4, rng=np.random.default_rng(4))
    acoustics.p_clean = 0.15
    spectra = mels.mean(dim=1).numpy()
    condition = (np.arange(16) // 4 + np.arange(16) % 4) % 4
    for c in range(4):
        rows = np.flatnonzero(condition == c)
        assert len(set(rows // 4)) == 4  # four speakers share it
    same = [np.abs(spectra[a] - spectra[b]).mean() for a in range(16) for b in range(a) if condition[a] == condition[b]]
    other = [np.abs(spectra[a] - spectra[b]).mean() for a in range(16) for b in range(a) if condition[a] != condition[b]]
    assert np.mean(same) < np.mean(other)  # the same voice sounds alike within a condition, not across


def test_a_rendering_is_fixed_by_its_seed_and_keeps_the_length(acoustics):
    wave = speech_like(1, np.random.default_rng(5))[0]
    a = acoustics.render(wave, np.random.default_rng(7))
    b = acoustics.render(wave, np.random.default_rng(7))
    assert a.shape == wave.shape and np.array_equal(a, b)
    assert not np.allclose(a / np.abs(a).max(), wave / np.abs(wave).max(), atol=0.05)  # a room and a noise


def test_relational_loss_is_zero_for_matching_similarities_and_grows_with_the_mismatch():
    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    rotated = e @ torch.linalg.qr(torch.randn(16, 16))[0]  # another space, the same similarities
    assert relational_loss(rotated, e).item() == pytest.approx(0, abs=1e-6)
    assert relational_loss(torch.nn.functional.normalize(torch.randn(8, 16), dim=1), e).item() > 0.01


def test_the_teacher_reads_weights_in_resemblyzers_layout_and_embeds_waves(tmp_path, monkeypatch):
    lstm, linear = torch.nn.LSTM(40, 256, num_layers=3, batch_first=True), torch.nn.Linear(256, 256)
    state = {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
             **{f"linear.{k}": v for k, v in linear.state_dict().items()},
             "similarity_weight": torch.ones(1), "similarity_bias": torch.zeros(1)}
    torch.save({"step": 1, "model_state": state}, tmp_path / "pretrained.pt")
    teacher = Teacher(tmp_path / "pretrained.pt")
    waves = torch.from_numpy(speech_like(3, np.random.default_rng(6)))
    emb = teacher(waves)
    assert emb.shape == (3, 256) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(teacher(waves * 0.01), emb, atol=1e-4)  # the level is normalised first
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install resemblyzer"):
        resemblyzer_weights()


def test_a_rendering_always_has_its_room_and_its_noise(acoustics):
    """Rendered for validation, every recording is in a room and under noise: none comes out dry or clean."""
    t = np.arange(SR // 2) / SR
    tone = np.concatenate([np.sin(2 * np.pi * 200 * t), np.zeros(3 * SR)]).astype(np.float32)  # then 3 s silent
    for seed in range(12):
        out = acoustics.render(tone, np.random.default_rng(seed))
        assert np.abs(out[-SR // 2:]).max() > 1e-4  # noise where it was silent (reverberation ends within 1 s)


def test_edge_windows_hold_silence_at_one_end_and_speech_at_the_other():
    """With p_edge 1 and no room or noise, every window is cut at an utterance's start or end: 10-50% of it
    silent at one end (and the pre-roll too when the speech starts inside the window), the rest untouched."""
    edges = Acoustics(rooms=0, p_clean=1.0, p_edge=1.0)
    waves = torch.from_numpy(speech_like(32, np.random.default_rng(1))) + 0.1  # no sample is zero by chance
    _, heard = edges.batch(waves, n_windows=4, rng=np.random.default_rng(0))
    window = heard[:, -WINDOW_SAMPLES:]
    silent = (window == 0).float().mean(dim=1)
    assert ((silent >= 0.1 - 1e-3) & (silent <= 0.5 + 1e-3)).all()
    starts = (window[:, 0] == 0).sum().item()
    assert 0 < starts < 32  # cut at the start in some windows, at the end in the others
    kept = window != 0
    assert torch.equal(window[kept], waves[:, -WINDOW_SAMPLES:].float()[kept])
    assert Acoustics(rooms=0, p_clean=1.0).p_edge == 0.0  # off unless asked
