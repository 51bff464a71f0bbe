"""What scoring promises: pyannote's DER/JER, label-independent, per file and pooled."""
import pytest

from diarize.evaluate import load_rttms, read_uem, score
from diarize.writers import Turn, write_turns

REF = {"meeting": [Turn(0, 10, "alice"), Turn(10, 20, "bob"), Turn(20, 30, "alice")],
       "call": [Turn(0, 5, "carol"), Turn(5, 10, "dave")]}


def by_file(rows):
    return {row["file"]: row for row in rows}


def test_identical_reference_and_hypothesis_score_zero():
    rows = by_file(score(REF, REF))
    for row in rows.values():
        assert row["der"] == 0 and row["jer"] == 0
        assert row["missed"] == row["false_alarm"] == row["confusion"] == 0
    assert rows["meeting"]["ref_speakers"] == rows["meeting"]["hyp_speakers"] == 2
    assert rows["TOTAL"]["total"] == pytest.approx(40.0)


def test_one_row_per_reference_file_then_total():
    rows = score(REF, {**REF, "extra": [Turn(0, 1, "x")]})
    assert [row["file"] for row in rows] == ["call", "meeting", "TOTAL"]
    assert set(rows[0]) == {"file", "der", "missed", "false_alarm", "confusion", "total", "jer",
                            "ref_speakers", "hyp_speakers"}


def test_speaker_names_do_not_matter_only_the_optimal_mapping():
    swapped = {f: [Turn(t.start, t.end, {"alice": "bob", "bob": "alice"}.get(t.speaker, "spk_" + t.speaker))
                   for t in turns] for f, turns in REF.items()}
    assert by_file(score(REF, swapped))["TOTAL"]["der"] == 0


def test_hypothesis_missing_half_the_speech_has_half_missed():
    hyp = {"meeting": [Turn(0, 10, "a"), Turn(10, 15, "b")], "call": [Turn(0, 5, "c")]}
    rows = by_file(score(REF, hyp))
    assert rows["meeting"]["missed"] == pytest.approx(0.5)
    assert rows["call"]["missed"] == pytest.approx(0.5)
    assert rows["TOTAL"]["missed"] == pytest.approx(0.5)
    assert rows["TOTAL"]["der"] == pytest.approx(0.5)
    assert rows["TOTAL"]["false_alarm"] == rows["TOTAL"]["confusion"] == 0


def test_a_file_missing_from_the_hypothesis_is_all_missed():
    rows = by_file(score(REF, {"meeting": REF["meeting"]}))
    assert rows["call"]["missed"] == 1.0 and rows["call"]["der"] == 1.0 and rows["call"]["hyp_speakers"] == 0
    assert rows["TOTAL"]["der"] == pytest.approx(10 / 40)  # pooled over seconds, not averaged over files


def test_collar_forgives_errors_at_reference_boundaries():
    ref = {"f": [Turn(0, 10, "A"), Turn(10, 20, "B")]}
    hyp = {"f": [Turn(0, 10.2, "x"), Turn(10.2, 20, "y")]}  # change point 0.2 s late
    strict, lenient = score(ref, hyp)[0], score(ref, hyp, collar=0.5)[0]
    assert strict["confusion"] == pytest.approx(0.2 / 20)
    assert lenient["der"] == 0 < strict["der"]
    # a total collar of 0.5 s is 0.25 s each side of every boundary: [0, .25], [9.75, 10.25], [19.75, 20]
    assert lenient["total"] == pytest.approx(20 - 1.0)


def test_skip_overlap_leaves_out_overlapped_reference_speech():
    ref = {"f": [Turn(0, 10, "A"), Turn(8, 20, "B")]}
    hyp = {"f": [Turn(0, 10, "x"), Turn(10, 20, "y")]}
    assert score(ref, hyp)[0]["missed"] > 0
    row = score(ref, hyp, skip_overlap=True)[0]
    assert row["der"] == 0 and row["total"] == pytest.approx(18)


def test_load_rttms_merges_a_folder_by_file_id(tmp_path):
    write_turns(REF["meeting"][:2], tmp_path / "a.rttm", file_id="meeting")
    write_turns(REF["meeting"][2:], tmp_path / "b.rttm", file_id="meeting")
    write_turns(REF["call"], tmp_path / "call.rttm")
    (tmp_path / "notes.txt").write_text("not an rttm")
    assert load_rttms(tmp_path) == REF
    assert load_rttms(tmp_path / "call.rttm") == {"call": REF["call"]}


def test_a_speakers_own_overlapping_turns_count_once_on_either_side():
    # two roundings of one turn, or a turn inside another of the same speaker: one speaker talking, not two
    ref = {"m": [Turn(0.5, 4.85, "alice"), Turn(1.0, 2.0, "alice"), Turn(0.5, 4.849, "alice"), Turn(5, 9, "bob")]}
    hyp = {"m": [Turn(0.5, 4.85, "x"), Turn(5, 9, "y"), Turn(6, 7, "y")]}
    row = by_file(score(ref, hyp))["m"]
    assert row["der"] == 0 and row["jer"] == 0 and row["total"] == pytest.approx(8.35)
    # turns of one speaker that only touch keep their boundary, and the collar there (pyannote's way)
    touching = {"m": [Turn(0, 5, "alice"), Turn(5, 10, "alice")]}
    assert by_file(score(touching, touching, collar=1.0))["m"]["total"] == pytest.approx(8)  # joined: 9


def test_an_rttm_without_speech_is_its_recording_with_none_and_speech_found_there_is_false_alarm(tmp_path):
    write_turns(REF["call"], tmp_path / "call.rttm")
    (tmp_path / "street noise.rttm").write_text(";; nobody speaks\n")  # its file id: street_noise
    ref = load_rttms(tmp_path)
    assert ref == {"call": REF["call"], "street_noise": []}
    rows = by_file(score(ref, {"call": REF["call"], "street_noise": [Turn(0, 2.5, "x")]}))
    assert rows["street_noise"]["der"] == 1 and rows["street_noise"]["jer"] == 1 and rows["street_noise"]["total"] == 0
    assert rows["TOTAL"]["false_alarm"] == pytest.approx(2.5 / 10)
    rows = by_file(score(ref, {"call": REF["call"], "street_noise": []}))
    assert rows["street_noise"]["der"] == rows["street_noise"]["jer"] == rows["TOTAL"]["der"] == 0


def test_a_region_with_no_speech_on_either_side_has_no_jaccard_error():
    rows = by_file(score(REF, REF, uem={"call": [(100, 200)]}))
    assert rows["call"]["der"] == rows["call"]["jer"] == 0 and rows["call"]["ref_speakers"] == 0
    assert by_file(score(REF, {"call": [Turn(150, 151, "x")]}, uem={"call": [(100, 200)]}))["call"]["jer"] == 1


def test_load_rttms_refuses_a_folder_without_rttm_files(tmp_path):
    with pytest.raises(ValueError, match="no .rttm files"):
        load_rttms(tmp_path)


def test_a_uem_limits_scoring_to_its_regions_and_files_it_omits_are_scored_whole():
    ref = {"f": [Turn(0, 10, "A"), Turn(10, 20, "B")], "g": [Turn(0, 10, "A"), Turn(10, 20, "B")]}
    hyp = {"f": [Turn(0, 20, "x")], "g": [Turn(0, 20, "x")]}  # one speaker for two: half is confusion
    assert by_file(score(ref, hyp))["f"]["confusion"] == pytest.approx(0.5)
    rows = by_file(score(ref, hyp, uem={"f": [(0, 4), (3, 10)]}))  # overlapping regions count once
    assert rows["f"]["der"] == 0 and rows["f"]["total"] == pytest.approx(10)
    assert rows["g"]["confusion"] == pytest.approx(0.5) and rows["g"]["total"] == pytest.approx(20)
    row = score(ref, hyp, uem={"f": [(5, 15)]})[0]
    assert row["total"] == pytest.approx(10) and row["confusion"] == pytest.approx(0.5)
    assert rows["f"]["ref_speakers"] == 1 and rows["g"]["ref_speakers"] == 2  # the speakers scored


def test_read_uem_groups_regions_by_file_and_names_a_malformed_line(tmp_path):
    uem = tmp_path / "all.uem"
    uem.write_text(";; scored regions\nf 1 0.00 10.5\n\ng 1 2 4\r\nf 1 20 30\n")
    assert read_uem(uem) == {"f": [(0.0, 10.5), (20.0, 30.0)], "g": [(2.0, 4.0)]}
    uem.write_bytes("\ufefff 1 0 5\n".encode())  # an editor's byte-order mark is not part of the file id
    assert read_uem(uem) == {"f": [(0.0, 5.0)]}
    uem.write_text(";; nothing\n\n")
    with pytest.raises(ValueError, match="lists no regions"):
        read_uem(uem)
    for bad in ("f 1 10 5", "f 1 0", "f 1 zero 5", "f 1 0 inf"):
        uem.write_text(f"g 1 2 4\n{bad}\n")
        with pytest.raises(ValueError, match=f"{uem}:2: malformed UEM line"):
            read_uem(uem)
