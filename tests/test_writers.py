"""What the output formats promise: lossless round trips, clean merges, atomic files, clear errors."""
import io
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diarize import writers
from diarize.writers import (FORMATS, Turn, get_writer, merge_turns, read_json, read_rttm, to_annotation,
                             write_turns)

label = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)


@st.composite
def turn(draw, min_length_ms=1):
    start = draw(st.integers(0, 3_600_000))
    length = draw(st.integers(min_length_ms, 600_000))
    return Turn(start / 1000, (start + length) / 1000, draw(st.sampled_from(["A", "B", "C"]) | label))


turn_lists = st.lists(turn(), max_size=20)


def union_length(turns, speaker):
    total, last_end = 0.0, float("-inf")
    for t in sorted(t for t in turns if t.speaker == speaker):
        if t.end > last_end:
            total += t.end - max(t.start, last_end)
            last_end = t.end
    return total


@settings(max_examples=60, deadline=None)
@given(turns=turn_lists, file_id=label)
def test_rttm_round_trip_gives_back_the_same_turns(tmp_path_factory, turns, file_id):
    path = tmp_path_factory.mktemp("rttm") / "out.rttm"
    write_turns(turns, path, file_id=file_id)
    back = read_rttm(path)
    assert back == ({file_id: sorted(turns)} if turns else {})


@settings(max_examples=60, deadline=None)
@given(turns=turn_lists)
def test_json_round_trip_gives_back_the_same_turns(tmp_path_factory, turns):
    path = tmp_path_factory.mktemp("json") / "out.json"
    write_turns(turns, path)
    assert read_json(path) == sorted(turns)


@settings(max_examples=100, deadline=None)
@given(turns=st.lists(turn(min_length_ms=0), max_size=30), gap=st.sampled_from([0.0, 0.1, 0.5, 2.0]))
def test_merge_turns_is_idempotent_and_sorted(turns, gap):
    merged = merge_turns(turns, gap)
    assert merge_turns(merged, gap) == merged
    assert merged == sorted(merged)
    assert all(t.end > t.start for t in merged)


@settings(max_examples=100, deadline=None)
@given(turns=st.lists(turn(), max_size=30), gap=st.sampled_from([0.0, 0.1, 0.5, 2.0]))
def test_merge_turns_never_leaves_same_speaker_turns_overlapping_or_within_gap(turns, gap):
    merged = merge_turns(turns, gap)
    for speaker in {t.speaker for t in merged}:
        own = [t for t in merged if t.speaker == speaker]
        assert all(b.start - a.end > gap for a, b in zip(own, own[1:]))


@settings(max_examples=100, deadline=None)
@given(turns=st.lists(turn(min_length_ms=0), max_size=30))
def test_merge_turns_without_gap_preserves_each_speakers_covered_time(turns):
    merged = merge_turns(turns)
    for speaker in {t.speaker for t in turns}:
        assert union_length(merged, speaker) == pytest.approx(union_length(turns, speaker), abs=1e-6)


def test_merge_turns_joins_a_speaker_across_a_short_pause_only():
    turns = [Turn(0, 1, "A"), Turn(1.2, 2, "A"), Turn(3, 4, "A"), Turn(1.5, 2.5, "B")]
    assert merge_turns(turns, gap=0.5) == [Turn(0, 2, "A"), Turn(1.5, 2.5, "B"), Turn(3, 4, "A")]
    assert merge_turns(turns) == sorted(turns)


def test_rttm_lines_follow_the_nist_layout(tmp_path):
    write_turns([Turn(1.5, 2.25, "spk0")], tmp_path / "meeting.rttm")
    assert (tmp_path / "meeting.rttm").read_text() == "SPEAKER meeting 1 1.500 0.750 <NA> <NA> spk0 <NA> <NA>\n"


def test_json_is_a_list_of_start_end_speaker_records_in_milliseconds():
    out = io.StringIO()
    get_writer("json").write([Turn(0.12345, 1.0006, "A")], "f", out)
    assert json.loads(out.getvalue()) == [{"start": 0.123, "end": 1.001, "speaker": "A"}]


def test_csv_has_a_header_and_one_row_per_turn():
    out = io.StringIO()
    get_writer("csv").write([Turn(2, 3, "B"), Turn(0, 1.5, "A")], "f", out)
    assert out.getvalue() == "start,end,speaker\n0.000,1.500,A\n2.000,3.000,B\n"


def test_srt_cues_are_numbered_from_one_with_speaker_as_text():
    out = io.StringIO()
    get_writer("srt").write([Turn(3661.5, 3662.004, "B"), Turn(0, 1.25, "A")], "f", out)
    assert out.getvalue() == ("1\n00:00:00,000 --> 00:00:01,250\nA\n\n"
                              "2\n01:01:01,500 --> 01:01:02,004\nB\n\n")


def test_unknown_format_is_refused_with_the_available_ones_listed(tmp_path):
    with pytest.raises(ValueError, match="rttm, json, csv, srt"):
        get_writer("vtt")
    with pytest.raises(ValueError, match="available"):
        write_turns([], tmp_path / "out.txt")
    assert FORMATS == ("rttm", "json", "csv", "srt")
    write_turns([Turn(0.0, 1.0, "A")], tmp_path / "y.out", fmt="RTTM")  # a name in capitals, as a suffix may be
    assert (tmp_path / "y.out").read_text().startswith("SPEAKER y 1 0.000 1.000")


def test_stdout_needs_an_explicit_format(capsys):
    with pytest.raises(ValueError, match="format"):
        write_turns([Turn(0, 1, "A")], "-")
    write_turns([Turn(0, 1, "A")], "-", fmt="rttm", file_id="rec")
    assert capsys.readouterr().out.startswith("SPEAKER rec 1 0.000 1.000")


def test_a_failing_write_leaves_no_partial_file_and_no_temp_file(tmp_path, monkeypatch):
    def half_then_fail(self, turns, file_id, stream):
        stream.write("SPEAKER half-written")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers.RTTMWriter, "write", half_then_fail)
    with pytest.raises(RuntimeError):
        write_turns([Turn(0, 1, "A")], tmp_path / "out.rttm")
    assert os.listdir(tmp_path) == []


def test_a_failing_write_leaves_an_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    write_turns([Turn(0, 1, "A")], path)
    before = path.read_bytes()
    monkeypatch.setattr(writers.JSONWriter, "write", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_turns([Turn(5, 6, "B")], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.json"]


def test_an_existing_file_is_replaced_whole(tmp_path):
    path = tmp_path / "out.csv"
    write_turns([Turn(i, i + 0.5, "speaker") for i in range(100)], path)
    write_turns([Turn(0, 1, "A")], path)
    assert path.read_text() == "start,end,speaker\n0.000,1.000,A\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_read_rttm_skips_blank_lines_comments_and_other_record_types(tmp_path):
    path = tmp_path / "ref.rttm"
    path.write_text(";; a comment\n\nSPKR-INFO f 1 <NA> <NA> <NA> unknown A <NA>\n"
                    "SPEAKER f 1 0.5 1.0 <NA> <NA> A <NA> <NA>\nSPEAKER g 1 2 1 <NA> <NA> B <NA>\n")
    assert read_rttm(path) == {"f": [Turn(0.5, 1.5, "A")], "g": [Turn(2.0, 3.0, "B")]}


def test_read_rttm_reads_past_a_byte_order_mark(tmp_path):
    path = tmp_path / "ref.rttm"
    path.write_bytes("\ufeffSPEAKER f 1 0.5 1.0 <NA> <NA> A <NA> <NA>\n".encode())  # "UTF-8 with BOM"
    assert read_rttm(path) == {"f": [Turn(0.5, 1.5, "A")]}


@pytest.mark.parametrize("bad", ["SPEAKER f 1 zero 1.0 <NA> <NA> A <NA> <NA>",
                                 "SPEAKER f 1 0.0 -1.0 <NA> <NA> A <NA> <NA>",
                                 "SPEAKER f 1 0.0 1.0 <NA> <NA> Ann Smith <NA> <NA>",  # read as "Ann"
                                 "SPEAKER f 1 0.0",
                                 "hello world"])
def test_read_rttm_names_the_file_and_line_of_a_malformed_line(tmp_path, bad):
    path = tmp_path / "ref.rttm"
    path.write_text(f"SPEAKER f 1 0 1 <NA> <NA> A <NA> <NA>\n;; note\n{bad}\n")
    with pytest.raises(ValueError, match=r"ref\.rttm:3: malformed"):
        read_rttm(path)


def test_read_json_rejects_records_without_times(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"speaker": "A"}]')
    with pytest.raises(ValueError, match="bad.json"):
        read_json(path)


def test_to_annotation_keeps_every_turn_under_its_speaker():
    annotation = to_annotation([Turn(0, 2, "A"), Turn(1, 3, "A"), Turn(2, 4, "B")], "rec")
    assert annotation.uri == "rec"
    assert sorted(annotation.labels()) == ["A", "B"]
    assert annotation.label_duration("A") == pytest.approx(3.0)
    assert len(list(annotation.itertracks())) == 3


def test_rttm_refuses_speaker_labels_with_spaces(tmp_path):
    with pytest.raises(ValueError, match="RTTM"):
        write_turns([Turn(0, 1, "speaker one")], tmp_path / "out.rttm")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", ["rttm", "json", "csv", "srt"])
@pytest.mark.parametrize("turn", [Turn(2.0, 1.0, "A"), Turn(-1.0, 1.0, "A"), Turn(0.0, float("nan"), "A")])
def test_turns_that_no_reader_would_take_back_are_not_written(tmp_path, fmt, turn):
    with pytest.raises(ValueError, match="times must be finite"):  # an RTTM of them was refused by evaluate
        write_turns([Turn(0, 1, "B"), turn], tmp_path / f"out.{fmt}")
    assert os.listdir(tmp_path) == []


def test_read_json_names_the_file_of_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"start": 0,')
    with pytest.raises(ValueError, match="broken.json"):
        read_json(path)


def test_rttm_file_ids_with_spaces_are_joined_by_underscores_and_read_back(tmp_path):
    path = tmp_path / "out.rttm"
    write_turns([Turn(0.0, 1.0, "A")], path, file_id="weekly  call ✓")
    assert read_rttm(path) == {"weekly_call_✓": [Turn(0.0, 1.0, "A")]}


def test_rttm_ends_where_the_other_formats_end_to_the_millisecond(tmp_path):
    turn = Turn(3599.9996, 3725.123456, "A")
    write_turns([turn], tmp_path / "t.rttm")
    write_turns([turn], tmp_path / "t.json")
    assert read_rttm(tmp_path / "t.rttm")["t"][0].end == read_json(tmp_path / "t.json")[0].end == 3725.123
