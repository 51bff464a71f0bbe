"""Inference: streaming features, speech detection, clustering and turns, and the bundled model end to end."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from diarize.audio import frame_energy_db, log_mel, stream_log_mel
from diarize.calibration import Calibration, normalise
from diarize.cluster import cluster_embeddings
from diarize.evaluate import score
from diarize.model import load_model
from diarize.pipeline import (PipelineConfig, diarize, diarize_windows, embed_windows, segment_embeddings,
                              torch_threads, windows_to_turns)
from diarize.vad import above_floor, energy_speech, is_noisy
from diarize.writers import Turn, read_rttm

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "meeting.wav"
REFERENCE = EXAMPLES / "meeting.rttm"


# thresholds for the synthetic blobs below (a model's own come from `calibration.calibrate`)
CAL = Calibration(merge_similarity=0.5, same_voice=0.7, min_silhouette=0.37)


def blobs(sizes, dim=32, spread=0.15, seed=0):
    """Unit vectors around one random direction per cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim))
    x = np.concatenate([c + spread * np.linalg.norm(c) * rng.standard_normal((n, dim)) / np.sqrt(dim)
                        for c, n in zip(centres, sizes)])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(len(sizes)), sizes)


def test_streamed_features_equal_one_pass_over_the_whole_wave():
    wave = np.random.default_rng(0).standard_normal(16000 * 3 + 77).astype(np.float32)
    chunks = [wave[:10000], wave[10000:30001], wave[30001:]]
    mels, energies = zip(*stream_log_mel(chunks))
    streamed, whole = torch.cat(mels), log_mel(wave)
    assert streamed.shape == whole.shape
    assert np.allclose(np.concatenate(energies), frame_energy_db(wave), atol=1e-3)
    # the two edge frames differ only in padding (zeros when streaming, reflection in one pass)
    assert torch.allclose(streamed[2:-2], whole[2:-2], atol=1e-4)


def test_energy_detector_finds_bursts_and_ignores_silence():
    wave = np.zeros(16000 * 4, dtype=np.float32)
    t = np.arange(16000) / 16000
    wave[16000:32000] = 0.3 * np.sin(2 * np.pi * 220 * t)  # 1-2 s
    wave[48000:56000] = 0.3 * np.sin(2 * np.pi * 330 * t[:8000])  # 3-3.5 s
    wave += 1e-4 * np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32)
    speech = energy_speech(frame_energy_db(wave))
    seconds = np.flatnonzero(speech) / 100
    assert speech.sum() / 100 == pytest.approx(1.5, abs=0.1)
    assert seconds.min() == pytest.approx(1.0, abs=0.05) and seconds.max() == pytest.approx(3.5, abs=0.05)
    assert not energy_speech(frame_energy_db(np.zeros(16000, np.float32))).any()


def test_energy_is_in_db_re_a_full_scale_sine_with_no_floor():
    t = np.arange(16000) / 16000
    assert np.median(frame_energy_db(np.sin(2 * np.pi * 1000 * t))) == pytest.approx(0.0, abs=0.1)
    assert np.median(frame_energy_db(1e-5 * np.sin(2 * np.pi * 1000 * t))) == pytest.approx(-100.0, abs=0.1)


def test_noise_floor_check_marks_pauses_in_quiet_and_loud_recordings():
    rng = np.random.default_rng(0)
    for gain in (1.0, 0.01):  # a -40 dB recording has the same floor-relative shape
        wave = 1e-4 * rng.standard_normal(16000 * 3)  # the room
        wave[8000:24000] += 0.1 * rng.standard_normal(16000)  # 0.5-1.5 s: somebody
        wave[28000:40000] += 0.1 * rng.standard_normal(12000)  # 1.75-2.5 s: somebody, after a 0.25 s pause
        heard = above_floor(frame_energy_db(gain * wave))
        seconds = np.flatnonzero(heard) / 100
        # each edge moves out by up to half a 25 ms frame plus one 10 ms smoothing step
        assert heard.sum() / 100 == pytest.approx(1.75 + 4 * 0.025, abs=0.03)
        assert not heard[155:170].any()  # the pause
        assert seconds.min() == pytest.approx(0.5, abs=0.04) and seconds.max() == pytest.approx(2.5, abs=0.04)
        # a DC offset (a cheap sound card's) is no sound: the pauses are where they were, not under a floor
        # lifted to -37 dB
        assert np.array_equal(above_floor(frame_energy_db(gain * wave + 0.01)), heard)
    # in a noisy recording soft speech sits at the floor: the check lets every frame through
    noisy = 0.03 * rng.standard_normal(16000 * 3)
    noisy[8000:24000] += 0.1 * rng.standard_normal(16000)
    assert above_floor(frame_energy_db(noisy)).all()


@pytest.mark.parametrize("noise, noisy", [(0.0003, False), (0.01, True)])
def test_a_noisy_recording_is_cut_into_longer_segments(tiny_model, voices, make_audio, monkeypatch, noise, noisy):
    """Loud speech under 40 dB above the floor (56 dB clean here, 26 dB noisy): each window's embedding is
    noisier, so segments average more of them (noisy_segment_seconds, 2.4 s, not 1.2 s)."""
    import diarize.pipeline

    asked = []

    def segments(windows, idx, speech, seconds):
        asked.append(seconds)
        return segment_embeddings(windows, idx, speech, seconds)

    monkeypatch.setattr(diarize.pipeline, "segment_embeddings", segments)
    path = make_audio("talk.wav", voices(seconds=10, noise=noise))
    config = PipelineConfig(vad="energy")
    model = load_model(tiny_model, "cpu")
    windows = embed_windows(path, model, config)
    assert is_noisy(windows.energy_db) == noisy
    diarize_windows(windows, "talk", config=config, calibration=model.calibration)
    assert asked == [config.noisy_segment_seconds if noisy else config.segment_seconds]
    assert config.noisy_segment_seconds == 2.4 and config.segment_seconds == 1.2


def test_clustering_estimates_the_speaker_count():
    x, truth = blobs([30, 20, 25])
    for method in ("hdbscan", "ahc"):
        labels = cluster_embeddings(x, method=method, calibration=CAL)
        assert len(set(labels)) == 3, method
        assert len(set(zip(labels, truth))) == 3  # each cluster is one speaker


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", ["ahc", "hdbscan"])
def test_one_voice_is_one_speaker_however_it_is_split(seed, method):
    """Segments of one voice scatter around a single direction; density clustering and linkage still find
    'clusters' in the scatter (4 of these 5 fail HDBSCAN without the silhouette check), and the silhouette
    of that split is what says there is just one."""
    x, _ = blobs([80], spread=1.0, seed=seed)
    assert len(set(cluster_embeddings(x, method=method, min_cluster_size=6, calibration=CAL))) == 1
    two, truth = blobs([40, 40], spread=1.0, seed=seed)
    assert len(set(zip(cluster_embeddings(two, method=method, min_cluster_size=6, calibration=CAL), truth))) == 2


def test_a_long_recording_of_repeated_phrases_is_not_one_speaker_per_phrase(monkeypatch):
    """Three voices, each saying 60 phrases 5 times over: a minimum cluster size of a few segments
    makes every phrase a speaker; one scaled to the recording's length does not."""
    import diarize.cluster

    rng = np.random.default_rng(0)
    phrases, truth = blobs([60, 60, 60], spread=1.0, seed=1)
    x = np.repeat(phrases, 5, axis=0) + 0.01 * rng.standard_normal((900, phrases.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat(truth, 5)
    labels = cluster_embeddings(x, method="hdbscan", min_cluster_size=5, calibration=CAL)
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3
    monkeypatch.setattr(diarize.cluster, "MIN_CLUSTER_SHARE", 0.0)
    assert len(set(cluster_embeddings(x, method="hdbscan", min_cluster_size=5, calibration=CAL))) > 3


def test_a_speaker_needs_the_minimum_size_even_when_every_cluster_is_smaller():
    """Seven small groups of 2-4 segments (one voice whose pieces drift apart, as a noisy recording's do):
    none holds the 5 segments a speaker needs, so they join, smallest first, rather than all standing."""
    from diarize.cluster import assign_to_nearest

    x, truth = blobs([4, 3, 3, 2, 3, 2, 3], spread=0.3, seed=2)
    labels = assign_to_nearest(x, truth, min_size=5)
    assert np.bincount(labels).min() >= 5 and len(set(labels)) < 7
    assert len(set(assign_to_nearest(x, truth, min_size=21))) == 1  # no group can reach the size: one
    kept = assign_to_nearest(x, truth, min_size=3)  # where some groups are that large, as before: they stay
    assert len(set(kept)) == 5 and all(len(set(kept[truth == g])) == 1 for g in range(7) if (truth == g).sum() >= 3)


def test_two_tight_clusters_of_one_voice_are_one_speaker():
    """A voice whose segments form two tight, well-separated clusters (a clip said over and over):
    the split is clear, but centroids at cosine 0.83 are one voice."""
    import dataclasses

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 32))
    a_too = a + 0.6 * rng.standard_normal(32) * np.linalg.norm(a) / np.sqrt(32)  # cosine 0.83 to a
    x = np.concatenate([c + 0.05 * np.linalg.norm(c) * rng.standard_normal((60, 32)) / np.sqrt(32)
                        for c in (a, a_too, b)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat([0, 0, 1], 60)
    labels = cluster_embeddings(x, method="hdbscan", min_cluster_size=5, calibration=CAL)
    assert len(set(labels)) == 2 and len(set(zip(labels, truth))) == 2
    apart = dataclasses.replace(CAL, same_voice=1.01)
    assert len(set(cluster_embeddings(x, method="hdbscan", min_cluster_size=5, calibration=apart))) == 3


def test_two_voices_run_together_are_split_and_one_voice_is_not():
    from diarize.cluster import _split_clear

    x, truth = blobs([40, 40, 40], seed=3)
    merged = np.minimum(truth, 1)  # the first two voices given one label, as an under-split would
    labels = _split_clear(x, merged, min_size=5, min_silhouette=CAL.min_silhouette, seed=0)
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3
    diffuse, _ = blobs([80], spread=1.0, seed=3)
    two = np.concatenate([diffuse, x[80:]])  # one scattered voice and another voice
    labels = _split_clear(two, np.repeat([0, 1], [80, 40]), min_size=5, min_silhouette=CAL.min_silhouette,
                          seed=0)
    assert labels.tolist() == np.repeat([0, 1], [80, 40]).tolist()


def test_estimating_the_count_needs_a_calibration_and_the_calibration_decides_it():
    x, truth = blobs([30, 20, 25], spread=0.6)
    with pytest.raises(ValueError, match="needs the model's calibration"):
        cluster_embeddings(x)
    assert len(set(cluster_embeddings(x, num_speakers=3))) == 3  # a given count needs none
    labels = cluster_embeddings(x, calibration=CAL)
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3
    # an encoder whose different speakers are this similar: the same centroids are one speaker
    assert len(set(cluster_embeddings(x, calibration=Calibration(-0.5, 0.7, 0.37)))) == 1


def test_a_calibration_read_on_held_out_speakers_counts_the_speakers_of_a_new_recording():
    from diarize.calibration import calibrate

    x, truth = blobs([40] * 15, spread=1.2, seed=2)  # 15 "speakers", 40 pieces each
    cal = calibrate([x[truth == s] for s in range(12)], [f"s{s}" for s in range(12)])  # 12 held out
    assert cal.centroid_eer < 0.1 and cal.speakers == 12 and 0 < cal.min_silhouette < 1
    assert 0 < cal.adjacent_similarity < 1  # consecutive pieces of one "utterance" after centring
    for voices in ([12], [12, 13], [12, 13, 14]):  # recordings of the 3 others
        members = np.isin(truth, voices)
        rec = x[members] - x[members].mean(axis=0)
        rec /= np.linalg.norm(rec, axis=1, keepdims=True)
        labels = cluster_embeddings(rec, calibration=cal)
        assert len(set(labels)) == len(voices) and len(set(zip(labels, truth[members]))) == len(voices)
    with pytest.raises(ValueError, match="at least 5 held-out speakers"):
        calibrate([x[truth == s] for s in range(3)], ["a", "b", "c"])
    # utterances of one piece each (short clips) give no consecutive pieces: the recording's spread is not
    # read (it was NaN, which merged every recording of 30 segments or more into one speaker)
    from diarize.calibration import ADAPT_SEGMENTS, for_recording

    short = np.concatenate([np.flatnonzero(truth == s)[:4] for s in range(5)])  # 5 voices, 4 clips each
    clips = calibrate([x[i: i + 1] for i in short], [f"s{truth[i]}" for i in short])
    assert clips.adjacent_similarity == 0 and clips.speakers == 5
    members = np.isin(truth, [12, 13])
    rec = x[members] - x[members].mean(axis=0)
    assert len(rec) >= ADAPT_SEGMENTS and for_recording(clips, normalise(rec)) == clips


def test_the_one_voice_threshold_is_read_on_every_held_out_voice_several_times(monkeypatch):
    from diarize.calibration import ONE_VOICE_DRAWS, one_voice_silhouettes

    voices = [blobs([30], seed=s)[0] for s in range(6)]
    silhouettes = one_voice_silhouettes(voices)
    assert sorted(silhouettes) == [2, 3, 4, 5]  # splits into 2 to MAX_SPEAKERS parts
    assert all(len(s) == 6 * ONE_VOICE_DRAWS for s in silhouettes.values())
    assert len(set(silhouettes[2])) > 6  # subsets differ
    # a "voice" that is two voices splits clearly in two in every draw of it; three voices, in three
    assert min(one_voice_silhouettes([blobs([15, 15], seed=9)[0]])[2]) > max(silhouettes[2])
    assert min(one_voice_silhouettes([blobs([10, 10, 10], seed=9)[0]])[3]) > max(silhouettes[3])
    # with more voices, fewer draws of each: the time stays bounded
    monkeypatch.setattr("diarize.calibration.ONE_VOICE_RECORDINGS", 20)
    assert len(one_voice_silhouettes(voices)[2]) == 6 * 3


def test_voices_that_split_in_two_no_clearer_than_one_voice_are_judged_by_their_split_into_more():
    x, truth = blobs([20] * 4, spread=1.0, seed=3)  # four voices: any two halves hold two voices each
    x = x - x.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # the split in two (silhouette 0.28) is no clearer than one voice's (0.5); in three or four (0.39-0.46)
    # it is clearer than one voice's splits into as many parts (0.35)
    per_count = Calibration(merge_similarity=0.5, same_voice=0.7, min_silhouette=0.5, split_silhouettes=(0.35,) * 3)
    labels = cluster_embeddings(x, calibration=per_count)
    assert len(set(labels)) == 4 and len(set(zip(labels, truth))) == 4
    assert per_count.min_silhouette_for(2) == 0.5 and per_count.min_silhouette_for(9) == 0.35
    # a calibration without the counts above two judges every split by the split in two: one voice
    assert len(set(cluster_embeddings(x, calibration=Calibration(0.5, 0.7, 0.5)))) == 1


def test_num_speakers_gives_exactly_that_many_and_min_max_bind():
    x, truth = blobs([30, 20, 25])
    labels = cluster_embeddings(x, num_speakers=3)
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3
    assert len(set(cluster_embeddings(x, num_speakers=2))) == 2
    assert len(set(cluster_embeddings(x, num_speakers=5))) == 5
    assert len(set(cluster_embeddings(x, max_speakers=2, calibration=CAL))) == 2
    assert len(set(cluster_embeddings(x, min_speakers=4, calibration=CAL))) == 4
    with pytest.raises(ValueError, match="min_speakers 3 is above max_speakers 2"):
        cluster_embeddings(x, min_speakers=3, max_speakers=2)


def test_a_given_count_with_a_calibration_merges_whole_speakers_down_to_it():
    x, truth = blobs([30, 20, 25, 25], seed=4)
    for k in (4, 3, 2):  # the linkage finds four; told fewer, the closest speakers merge whole
        labels = cluster_embeddings(x, num_speakers=k, calibration=CAL)
        assert len(set(labels)) == k
        assert len(set(zip(labels, truth))) == 4  # no speaker cut between two labels
    assert len(set(cluster_embeddings(x, num_speakers=6, calibration=CAL))) == 6  # more than it finds: spectral
    assert len(set(cluster_embeddings(x, max_speakers=3, calibration=CAL))) == 3


def test_no_segment_is_left_unlabelled_and_outliers_join_a_speaker():
    x, _ = blobs([20, 20])
    x = np.concatenate([x, np.eye(32)[:3]])  # three points far from both speakers
    labels = cluster_embeddings(x, method="hdbscan", calibration=CAL)
    assert (labels >= 0).all() and len(labels) == len(x)
    assert len(set(labels)) == 2


def test_long_inputs_cluster_a_sample_and_assign_the_rest():
    x, truth = blobs([1500, 1200, 800], seed=1)
    labels = cluster_embeddings(x, method="ahc", calibration=CAL, max_points=500)
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3
    labels = cluster_embeddings(x, num_speakers=3)  # spectral clustering of a 1,000-point sample
    assert len(set(labels)) == 3 and len(set(zip(labels, truth))) == 3


def test_short_turns_are_absorbed_by_their_neighbours():
    speech = np.ones(300, dtype=bool)  # 3 s of speech
    centres = np.arange(0.1, 3.0, 0.2)
    labels = np.zeros(len(centres), int)
    labels[(centres > 1.4) & (centres < 1.6)] = 1  # one 0.2 s window of another speaker
    labels[centres > 2.0] = 1
    turns = windows_to_turns(centres, labels, speech, ["A", "B"], min_turn=0.3, duration=3.0)
    assert [t.speaker for t in turns] == ["A", "B"]
    assert turns[0].start == 0 and turns[-1].end == pytest.approx(3.0)


def test_a_short_pause_stays_inside_a_speakers_turn_but_not_between_speakers():
    speech = np.ones(600, dtype=bool)  # 6 s: A speaks, pauses 0.5 s, speaks, pauses 0.5 s, then B
    speech[150:200] = speech[350:400] = False
    centres = np.arange(0.1, 6.0, 0.2)
    labels = (centres > 4.0).astype(int)
    turns = windows_to_turns(centres, labels, speech, ["A", "B"], min_turn=0.3, duration=6.0, max_pause=0.8)
    assert [(t.speaker, t.start, t.end) for t in turns] == [("A", 0.0, 3.5), ("B", 4.0, 6.0)]
    apart = windows_to_turns(centres, labels, speech, ["A", "B"], min_turn=0.3, duration=6.0, max_pause=0.3)
    assert [t.speaker for t in apart] == ["A", "A", "B"]
    # the recording at its noise floor for part of A's pause (1.6-1.9 s): the bridge stops there
    heard = np.ones(600, dtype=bool)
    heard[160:190] = False
    cut = windows_to_turns(centres, labels, speech, ["A", "B"], min_turn=0.3, duration=6.0, max_pause=0.8,
                           heard=heard)
    assert [(t.speaker, round(t.start, 3), round(t.end, 3)) for t in cut] == [
        ("A", 0.0, 1.6), ("A", 1.9, 3.5), ("B", 4.0, 6.0)]


def test_chunk_size_does_not_change_the_result(tiny_model):
    model = load_model(tiny_model, "cpu")
    a = embed_windows(EXAMPLE, model, PipelineConfig(chunk_seconds=60))
    b = embed_windows(EXAMPLE, model, PipelineConfig(chunk_seconds=7.3))
    assert np.array_equal(a.start, b.start)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)


@pytest.mark.parametrize("silero_threads", [1, 3])
def test_silero_on_threads_of_its_own_gives_the_speech_of_one_pass_and_puts_torch_threads_back(
        tiny_model, monkeypatch, silero_threads):
    """silero-vad scores chunks on threads beside the embeddings, with torch that many threads fewer
    meanwhile: its probabilities are those of one pass over each chunk, in order, and torch's thread count
    is as it was."""
    import diarize.pipeline
    from diarize.audio import stream_audio
    from diarize.vad import SileroSpeech

    monkeypatch.setattr(diarize.pipeline, "SILERO_THREADS", silero_threads)
    with torch_threads(2):
        windows = embed_windows(EXAMPLE, load_model(tiny_model, "cpu"), PipelineConfig(chunk_seconds=7.3))
        assert torch.get_num_threads() == 2
    alone, carry = SileroSpeech(), np.zeros(0, np.float32)
    for chunk in stream_audio(EXAMPLE, 7.3):  # 7.3 s is no whole number of 32 ms steps: tails carry over
        carry = np.concatenate([carry, chunk])
        alone.add(SileroSpeech.score(carry[: len(carry) // 512 * 512]))
        carry = carry[len(carry) // 512 * 512:]
    assert len(windows.silero.probs) == len(alone.probs) > 2 * silero_threads
    for threaded, direct in zip(windows.silero.probs, alone.probs):
        np.testing.assert_array_equal(threaded, direct)


def test_silero_scores_every_whole_32_ms_of_the_recording_whatever_the_chunk_size(tiny_model):
    import soundfile as sf

    model = load_model(tiny_model, "cpu")
    for seconds in (60, 7.3, 2.01):
        windows = embed_windows(EXAMPLE, model, PipelineConfig(chunk_seconds=seconds))
        assert sum(map(len, windows.silero.probs)) == sf.info(str(EXAMPLE)).frames // 512, seconds


def test_bundled_model_separates_the_example_speakers():
    """End to end on the bundled model, told there are three voices: most of the speech goes to the
    right speaker."""
    result = diarize(EXAMPLE, device="cpu", num_speakers=3)
    assert len(result.speakers) == 3
    total = score(read_rttm(REFERENCE), {"meeting": result.turns}, collar=0.5)[-1]
    assert total["der"] < 0.2 and total["confusion"] < 0.1
    assert result.speaker_embeddings.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(result.speaker_embeddings, axis=1), 1, rtol=1e-5)


def test_bundled_model_finds_more_than_one_speaker_on_its_own():
    assert len(diarize(EXAMPLE, device="cpu").speakers) >= 2


def test_the_api_names_what_it_raises_for_an_unreadable_input_or_model(tmp_path):
    import diarize as api

    assert {"AudioError", "ModelError"} <= set(api.__all__) and issubclass(api.AudioError, ValueError)
    with pytest.raises(api.AudioError, match="none.wav"):
        api.diarize(tmp_path / "none.wav")
    (tmp_path / "notes.pt").write_text("not a model\n")
    with pytest.raises(api.ModelError, match="notes.pt"):
        api.diarize(EXAMPLE, model=tmp_path / "notes.pt")


def test_a_printed_result_shows_its_turns_at_their_times_not_its_arrays():
    result = diarize(EXAMPLE, device="cpu")
    shown = repr(result)
    assert "speech=" not in shown and "segments=" not in shown and len(shown) < 5000
    assert all(type(t.start) is float and type(t.end) is float for t in result.turns)  # not np.float64(...)
    # turns start on 10 ms frames and print so: 6.1, not 6.1000000000000005
    assert all(repr(t.start) == repr(round(t.start, 2)) and repr(t.start) in shown for t in result.turns)


def test_knowing_the_speaker_count_never_hurts_the_example():
    free = diarize(EXAMPLE, device="cpu")
    fixed = diarize(EXAMPLE, device="cpu", num_speakers=3)
    ref = read_rttm(REFERENCE)
    assert score(ref, {"meeting": fixed.turns})[-1]["der"] <= score(ref, {"meeting": free.turns})[-1]["der"] + 1e-9


def test_a_speaker_left_without_turns_is_said_and_the_result_stays_consistent(monkeypatch):
    """Resegmentation (every window to its nearest speaker) can leave a speaker without a turn, most often when
    asked for more speakers than talk: the others are named without a gap, a warning says so, and segment
    labels still index `speakers` and `speaker_embeddings` (they pointed one row off)."""
    import diarize.pipeline as pipeline

    to_turns = pipeline.windows_to_turns

    def second_loses_every_window(centres, labels, *args, **kwargs):  # as resegmentation may leave it
        return to_turns(centres, np.where(labels == 1, 0, labels), *args, **kwargs)

    monkeypatch.setattr(pipeline, "windows_to_turns", second_loses_every_window)
    for counts, asked in ((dict(num_speakers=3), "3 speakers asked for"),
                          (dict(min_speakers=3), "at least 3 speakers asked for")):
        result = diarize(EXAMPLE, device="cpu", **counts)
        assert result.speakers == ["SPEAKER_00", "SPEAKER_01"] == sorted({t.speaker for t in result.turns})
        assert any(f"{asked}; 2 kept turns of their own" in w for w in result.warnings)
        labels, emb = result.segments["labels"], result.segments["embeddings"]
        assert sorted(set(labels)) == [0, 1] and result.speaker_embeddings.shape == (2, emb.shape[1])
        own = normalise(np.stack([emb[labels == i].mean(axis=0) for i in range(2)]))
        assert np.allclose(own, result.speaker_embeddings, atol=1e-5)  # each row its segments' centroid


@pytest.mark.parametrize("counts, message", [
    (dict(num_speakers=0), "num_speakers 0: a speaker count is a whole number"),
    (dict(num_speakers=2.5), "num_speakers 2.5"),
    (dict(min_speakers=-3), "min_speakers -3"),
    (dict(max_speakers=0), "max_speakers 0"),
    (dict(num_speakers=5, max_speakers=2), "num_speakers 5 is above max_speakers 2"),
    (dict(num_speakers=2, min_speakers=3), "num_speakers 2 is below min_speakers 3"),
    (dict(seed=-5), r"seed -5: a whole number, 0 \.\. 4294967295"),
    (dict(min_speakers=3, max_speakers=2), "min_speakers 3 is above max_speakers 2"),
])
def test_the_api_refuses_speaker_counts_that_cannot_be_met_naming_its_parameters(counts, message):
    with pytest.raises(ValueError, match=message):
        diarize("never-read.wav", **counts)


def test_a_batch_of_no_windows_is_refused():
    with pytest.raises(ValueError, match="batch_size 0"):
        PipelineConfig(batch_size=0)


@pytest.mark.parametrize("settings, message", [
    (dict(segment_seconds=0), "segment_seconds 0: above 0"),
    (dict(min_turn=-1), "min_turn -1: 0 or more"),
    (dict(silero_threshold=1.5), "silero_threshold 1.5: a share, between 0 and 1"),
    (dict(neighbour_weight=-0.5), "neighbour_weight -0.5: 0 or more"),
    (dict(neighbour_weight=2), "neighbour_weight 2: a share, between 0 and 1"),
    (dict(overlap="no"), "overlap 'no': True or False"),
    (dict(vad="webrtc"), "unknown speech detector 'webrtc'"),
    (dict(cluster="kmeans"), "unknown clustering method 'kmeans'"),
    (dict(smooth_windows=2.5), "smooth_windows 2.5: a whole number"),
    (dict(max_pause="long"), "max_pause 'long': a number"),
])
def test_settings_that_cannot_work_are_refused_before_any_audio_is_read(settings, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**settings)


def test_the_api_takes_a_dict_of_settings_and_no_lower_bound_on_the_count(tiny_model):
    result = diarize(EXAMPLE, tiny_model, device="cpu", config={"vad": "energy"}, min_speakers=None)
    assert result.turns and result.speakers
    with pytest.raises(TypeError, match="no setting named 'vda'"):
        diarize(EXAMPLE, tiny_model, device="cpu", config={"vda": "energy"})
    with pytest.raises(TypeError, match="a PipelineConfig or a dict of its fields, not str"):
        diarize(EXAMPLE, tiny_model, device="cpu", config="energy")


def test_the_result_carries_the_warnings_about_its_file(tiny_model, make_audio, voices):
    wave = voices(seconds=3.0)
    wave[:8000] = np.nan
    result = diarize(make_audio("nan.wav", wave, subtype="FLOAT"), tiny_model, device="cpu")
    assert any("nan.wav: 8000 samples are NaN or infinite" in w for w in result.warnings)
    low = diarize(make_audio("low.wav", voices(seconds=3.0, sr=6000), sr=6000), tiny_model, device="cpu")
    assert any("low.wav: sampled at 6000 Hz" in w for w in low.warnings)


def test_a_burst_of_short_alternating_runs_joins_the_speaker_around_it():
    from diarize.pipeline import absorb_short_runs

    runs = [[0, 100, 0], [100, 110, 1], [110, 125, 0], [125, 140, 1], [140, 300, 0]]  # frames of 10 ms
    assert absorb_short_runs(runs, short=50) == [[0, 300, 0]]
    # together the short runs of a speaker can make a turn of their own
    runs = [[0, 100, 0], [100, 120, 1], [120, 135, 0], [135, 160, 1], [160, 300, 0]]
    assert absorb_short_runs(runs, short=50) == [[0, 100, 0], [100, 160, 1], [160, 300, 0]]


def test_after_absorbing_no_short_run_touches_another_and_no_speech_is_lost():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from diarize.pipeline import absorb_short_runs

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(1, 80), st.integers(0, 3), st.booleans()), max_size=40),
           st.integers(1, 60))
    def check(pieces, short):
        runs, t = [], 0
        for length, label, gap in pieces:  # runs in time order, touching unless `gap`
            t += 7 * gap
            runs.append([t, t + length, label])
            t += length
        out = absorb_short_runs(runs, short)
        assert sum(b - a for a, b, _ in out) == sum(b - a for a, b, _ in runs)
        assert all(x[1] <= y[0] for x, y in zip(out, out[1:]))
        for i, (a, b, lab) in enumerate(out):
            touches = [j for j in (i - 1, i + 1) if 0 <= j < len(out) and (out[j][1] == a or out[j][0] == b)]
            assert all(out[j][2] != lab for j in touches)  # touching runs of one speaker were joined
            assert b - a >= short or not touches

    check()


def test_segments_end_where_their_speech_ends(tiny_model):
    result = diarize(EXAMPLE, tiny_model, device="cpu", config=PipelineConfig(vad="energy"))
    frames = [(int(round(a / 0.01)), int(round(b / 0.01))) for a, b in
              zip(result.segments["start"], result.segments["end"])]
    assert len(frames) > 10
    assert all(result.speech[a:b].all() for a, b in frames)  # no segment reaches over a pause


def two_speaker_windows(overlap_from: float, overlap_to: float):
    """Windows of a 22 s recording: silence, voice A for 10 s, voice B for 10 s, silence; the detector's
    overlap probability is 0.9 between the given times and 0.05 elsewhere."""
    from diarize.pipeline import Windows

    x, _ = blobs([1, 1], spread=0.0, seed=3)
    start = np.arange(0, 21.6, 0.2)
    centre = start + 0.2
    emb = np.where(((centre >= 1) & (centre < 11))[:, None], x[0], x[1]).astype(np.float32)
    energy = np.full(2200, -90.0)
    energy[100:2100] = -20 + np.random.default_rng(0).normal(0, 1, 2000)
    overlap = np.full(2200, 0.05, np.float16)
    overlap[int(overlap_from * 100): int(overlap_to * 100)] = 0.9
    return Windows(emb, start, energy, 2200, 22.0, overlap=overlap, overlap_threshold=0.5)


def test_overlap_where_turns_meet_gets_the_next_speaker_too_and_only_when_asked():
    windows = two_speaker_windows(9.6, 11.0)  # B starts while A (1-11 s) is still talking
    turns = diarize_windows(windows, "rec", num_speakers=2, config=PipelineConfig(vad="energy")).turns
    a = next(t.speaker for t in turns if t.start < 2)
    b = [t for t in turns if t.speaker != a]
    assert len(b) == 1 and abs(b[0].start - 9.6) < 0.25  # B's turn begins where the overlap does
    assert any(t.speaker == a and t.start < 2 and abs(t.end - 11.0) < 0.25 for t in turns)  # A talks on
    off = diarize_windows(windows, "rec", num_speakers=2, config=PipelineConfig(vad="energy", overlap=False))
    assert overlapping(off.turns) == 0 and overlapping(turns) > 1.0


def test_overlap_far_from_any_other_speakers_turn_gets_no_second_speaker():
    # marked in the middle of A's turn, 4 s before B talks: a false alarm, most likely
    turns = diarize_windows(two_speaker_windows(5.0, 7.0), "rec", num_speakers=2,
                            config=PipelineConfig(vad="energy")).turns
    assert overlapping(turns) == 0
    near = PipelineConfig(vad="energy", overlap_reach=5.0)  # unless B's turns are reached from there
    assert overlapping(diarize_windows(two_speaker_windows(5.0, 7.0), "rec", num_speakers=2, config=near).turns) > 1.0


def test_a_stretch_of_overlap_goes_to_the_most_like_speaker_among_those_whose_turn_it_meets():
    from diarize.pipeline import second_speakers

    names = ["A", "B", "C"]
    turns = [Turn(0.0, 5.0, "A"), Turn(5.0, 8.0, "B"), Turn(20.0, 25.0, "C")]
    centres = np.array([4.0, 4.6, 5.4, 12.0])  # A's end, B's start, and one in a pause far from every turn
    labels = np.array([0, 0, 1, 0])
    sims = np.array([[0.9, 0.1, 0.8],   # most like C after A, but C talks 15 s away: B, whose turn it meets
                     [0.9, 0.3, 0.2],
                     [0.2, 0.9, 0.5],   # B's window: A is the other speaker there
                     [0.9, 0.1, 0.8]])
    overlapped = np.zeros(2600, bool)
    overlapped[380:560] = True  # 3.8-5.6 s, around the change from A to B
    overlapped[1150:1250] = True  # 11.5-12.5 s: 3.5 s and more from any turn
    second = second_speakers(centres, labels, sims, overlapped, turns, names, reach=0.5)
    assert list(second) == [1, 1, 0, len(names)]  # the last: no speaker near enough
    only_own = second_speakers(centres[:1], labels[:1], sims[:1], overlapped, turns[:1], names, reach=0.5)
    assert list(only_own) == [len(names)]  # its own speaker is the only one there: no second


def test_overlap_shorter_than_the_minimum_and_one_speaker_recordings_get_no_second_speaker():
    config = PipelineConfig(vad="energy", overlap=True)
    short = diarize_windows(two_speaker_windows(5.0, 5.1), "rec", num_speakers=2, config=config).turns
    a = next(t.speaker for t in short if t.start < 2)
    assert not [t for t in short if t.speaker != a and t.start < 10]
    alone = diarize_windows(two_speaker_windows(5.0, 7.0), "rec", num_speakers=1, config=config).turns
    assert len({t.speaker for t in alone}) == 1


def test_a_recording_whose_voices_lie_closer_together_is_merged_less_readily():
    from diarize.calibration import ADAPT_SEGMENTS, for_recording

    cal = Calibration(0.5, 0.7, 0.37, adjacent_similarity=0.7)
    apart, _ = blobs([20, 20], spread=0.3, seed=4)
    close, _ = blobs([20, 20], spread=1.5, seed=4)
    centred = [normalise(x - x.mean(axis=0)) for x in (apart, close)]
    moved = [for_recording(cal, x).merge_similarity for x in centred]
    assert moved[1] < moved[0] and moved[1] < cal.merge_similarity
    assert all(for_recording(cal, x).min_silhouette == cal.min_silhouette for x in centred)
    assert for_recording(cal, centred[1][: ADAPT_SEGMENTS - 1]) == cal  # too few segments to read it on
    assert for_recording(Calibration(0.5, 0.7, 0.37), centred[1]).merge_similarity == 0.5  # not measured
    nan = Calibration(0.5, 0.7, 0.37, adjacent_similarity=float("nan"))  # as saved by an older calibration
    assert for_recording(nan, centred[1]).merge_similarity == 0.5


def overlapping(turns) -> float:
    """Seconds where two speakers' turns overlap."""
    return sum(max(0.0, min(a.end, b.end) - max(a.start, b.start))
               for i, a in enumerate(turns) for b in turns[i + 1:] if a.speaker != b.speaker)


def test_the_bundled_overlap_detector_adds_overlapping_turns_unless_switched_off():
    from diarize.overlap import load_detector

    detector = load_detector()  # models/overlap/diarize-overlap.pt
    assert 0 < detector.threshold < 1
    # the example holds 0.5 s of overlap, of which the stored threshold (set for 3/4 precision) marks
    # less than the 0.2 s a second speaker needs: at 0.5 it marks nearly all of it
    detector.threshold = 0.5
    model = load_model(device="cpu")
    on = diarize(EXAMPLE, model, overlap_model=detector)  # on by default
    off = diarize(EXAMPLE, model, config=PipelineConfig(overlap=False))
    assert overlapping(off.turns) == 0  # one speaker a frame
    assert overlapping(on.turns) > 0
    assert {(t.start, t.end, t.speaker) for t in off.turns} != {(t.start, t.end, t.speaker) for t in on.turns}
    assert "overlap detection" in on.timings and "overlap detection" not in off.timings


def test_with_outputs_compares_embeddings_and_output_distributions_in_the_given_shares():
    from diarize.cluster import with_outputs

    rng = np.random.default_rng(0)
    x = normalise(rng.normal(size=(6, 8)))
    p = rng.dirichlet(np.ones(5), size=6)
    fused = with_outputs(x, p, 0.75)
    bhattacharyya = np.sqrt(p) @ np.sqrt(p).T
    assert np.allclose(fused @ fused.T, 0.25 * (x @ x.T) + 0.75 * bhattacharyya, atol=1e-5)
    assert np.allclose(with_outputs(x, p, 0.0) @ with_outputs(x, p, 0.0).T, x @ x.T, atol=1e-5)


def test_refining_moves_points_to_their_nearest_speaker_and_never_loses_one():
    from diarize.cluster import refine

    x = normalise(np.array([[1, 0], [0.9, 0.1], [0.1, 0.9], [0, 1], [0.95, 0.05]]))
    assert refine(x, np.array([0, 0, 1, 1, 1])).tolist() == [0, 0, 1, 1, 0]
    rng = np.random.default_rng(1)
    for _ in range(200):  # the count was found before: whatever the points, no speaker is left empty
        x = normalise(rng.normal(size=(12, 3)))
        labels = np.r_[np.arange(4), rng.integers(0, 4, 8)]
        assert len(np.unique(refine(x, labels))) == 4


def test_pooling_mixes_each_segment_with_the_ones_it_touches_only():
    from diarize.cluster import pool_neighbours

    x = normalise(np.random.default_rng(0).normal(size=(4, 8)))
    pooled = pool_neighbours(x, np.array([True, False, True]), 0.5)  # two stretches: segments 0-1 and 2-3
    for row, expected in zip(pooled, (x[0] + 0.5 * x[1], x[1] + 0.5 * x[0], x[2] + 0.5 * x[3], x[3] + 0.5 * x[2])):
        assert np.allclose(row, expected / np.linalg.norm(expected))
    assert pool_neighbours(x, np.array([True, False, True]), 0.0) is x


def test_told_the_count_a_segment_unlike_its_stretch_of_speech_goes_with_it_when_pooled():
    from diarize.pipeline import Windows

    x, _ = blobs([1, 1], spread=0.0, seed=3)
    start = np.arange(0, 21.6, 0.2)
    centre = start + 0.2
    odd = (centre >= 4.8) & (centre < 6.0)  # one segment of A's stretch (1-11 s) that looks more like B
    emb = np.where((centre < 12)[:, None], x[0], x[1])
    emb[odd] = 0.46 * x[0] + 0.54 * x[1]
    energy = np.full(2200, -90.0)
    speech = (np.arange(2200) >= 100) & (np.arange(2200) < 1100) | (np.arange(2200) >= 1300) & (np.arange(2200) < 2100)
    energy[speech] = -20 + np.random.default_rng(0).normal(0, 1, 1800)
    windows = Windows(normalise(emb).astype(np.float32), start, energy, 2200, 22.0)

    def with_first(weight):
        segments = diarize_windows(windows, "rec", num_speakers=2,
                                   config=PipelineConfig(vad="energy", neighbour_weight=weight)).segments
        at = np.flatnonzero((segments["start"] <= 5.4) & (segments["end"] > 5.4))[0]
        return segments["labels"][at] == segments["labels"][0]

    assert not with_first(0.0) and with_first(0.25)


def test_the_output_distributions_settle_who_spoke_where_the_embeddings_cannot_tell():
    from diarize.pipeline import Windows

    x, _ = blobs([1, 1], spread=0.0, seed=3)
    start = np.arange(0, 21.6, 0.2)
    centre = start + 0.2
    a = (centre >= 1) & (centre < 11)
    mixed = (centre >= 15) & (centre < 18)  # speaker B, whose embeddings there look like A's
    emb = np.where((a | mixed)[:, None], x[0], x[1]).astype(np.float32)
    outputs = np.zeros((len(start), 4), np.float16)
    outputs[a, 0] = outputs[~a, 1] = 1
    energy = np.full(2200, -90.0)
    energy[100:2100] = -20 + np.random.default_rng(0).normal(0, 1, 2000)
    windows = Windows(emb, start, energy, 2200, 22.0, outputs=outputs)

    def speaker_at(config, t):
        turns = diarize_windows(windows, "rec", num_speakers=2, config=config).turns
        first = next(s.speaker for s in turns if s.start < 2)
        return next(s.speaker for s in turns if s.start <= t < s.end) == first

    assert speaker_at(PipelineConfig(vad="energy", output_weight=0.0), 16.5)  # the embeddings say A
    assert not speaker_at(PipelineConfig(vad="energy", output_weight=0.9), 16.5)  # with the outputs: B, who spoke
