"""What the `diarize` commands promise: models are checked and never run pickled code, embeddings come
in the documented arrays, scoring and help work, outputs are written whole or not at all, and every
failure is one `error:` line with a non-zero exit."""
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest
import typer
import torch

from diarize.cli import app
from diarize.model import FORMAT_VERSION, load_checkpoint
from diarize.writers import RTTMWriter

EXAMPLE_RTTM = Path(__file__).resolve().parent.parent / "examples" / "meeting.rttm"


# ---- models


def _leave_marker(path):
    Path(path).write_text("pickled code ran")


class Payload:
    """An object whose unpickling runs code: it leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _leave_marker, (self.marker,)


def bad_model(kind, tiny_model, folder):
    """A .pt file that must be refused, and a phrase its error names."""
    path = folder / f"{kind}.pt"
    if kind == "missing":
        return path, "no such model file"
    if kind == "truncated":
        data = tiny_model.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "not a diarize model"
    if kind == "text":
        path.write_text("these are not the weights you are looking for\n")
        return path, "not a diarize model"
    ckpt = torch.load(tiny_model, weights_only=True)
    if kind == "old-format":
        torch.save({**ckpt, "format_version": FORMAT_VERSION + 41}, path)
        return path, f"format version {FORMAT_VERSION + 41}"
    if kind == "wrong-shapes":
        torch.save({**ckpt, "config": {**ckpt["config"], "lstm_hidden": 32}}, path)
        return path, "config and weights do not match"
    torch.save({**ckpt, "metrics": {"eer": Payload(folder / "marker")}}, path)
    return path, "refused"


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "old-format", "wrong-shapes", "pickled-object"])
def test_a_bad_model_is_an_error_naming_the_file_and_the_problem(diarize, fails_cleanly, make_audio, tiny_model,
                                                                 tmp_path, kind):
    model, problem = bad_model(kind, tiny_model, tmp_path)
    wav = make_audio("two.wav")
    for args in (["cluster", wav, "--out-dir", tmp_path / "out"], ["embed", wav, "--out", tmp_path / "e.npz"],
                 ["info"]):
        result = diarize(*args, "--model", model)
        assert problem in fails_cleanly(result, str(model))
    assert not (tmp_path / "out").exists() and not (tmp_path / "e.npz").exists()


def test_a_pickled_object_in_a_model_is_refused_without_running_its_code(diarize, fails_cleanly, tiny_model,
                                                                         tmp_path):
    model, _ = bad_model("pickled-object", tiny_model, tmp_path)
    fails_cleanly(diarize("info", "--model", model), str(model), "refused")
    assert not (tmp_path / "marker").exists()
    torch.load(model, weights_only=False)  # the control: loaded the unsafe way, the payload does run
    assert (tmp_path / "marker").read_text() == "pickled code ran"


def test_a_text_file_model_is_not_mistaken_for_pickled_objects(diarize, fails_cleanly, tmp_path):
    model = tmp_path / "notes.pt"
    model.write_text("not a model\n")  # 'n' happens to be a pickle opcode torch's safe unpickler refuses
    assert "not a diarize model" in fails_cleanly(diarize("info", "--model", model), str(model))


def test_an_unknown_model_name_lists_the_available_ones(diarize, fails_cleanly):
    assert "available:" in fails_cleanly(diarize("info", "--model", "no-such-model"), "no-such-model")


def test_the_tiny_test_model_is_a_valid_checkpoint(tiny_model):
    assert load_checkpoint(tiny_model)["format_version"] == FORMAT_VERSION


# ---- embed


@pytest.mark.parametrize("level", ["window", "segment", "speaker", "file"])
def test_embed_writes_unit_norm_float32_rows_with_times_paths_and_speakers(diarize, succeeds, make_audio, tmp_path,
                                                                          level):
    wav = make_audio("two.wav")
    out = tmp_path / f"{level}.npz"
    succeeds(diarize("embed", wav, "--level", level, "--out", out))
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"embeddings", "start", "end", "paths", "speakers"}
    emb = arrays["embeddings"]
    n = len(emb)
    assert emb.dtype == np.float32 and emb.ndim == 2 and emb.shape[1] == 32 and n >= 1
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert all(len(arrays[k]) == n for k in ("start", "end", "paths", "speakers"))
    assert np.all(arrays["start"] < arrays["end"]) and np.all(arrays["start"] >= 0)
    assert np.all(arrays["end"] <= 3.0 + 1e-6)
    assert set(arrays["paths"]) == {str(wav)}
    if level in ("segment", "speaker"):
        assert all(s.startswith("SPEAKER_") for s in arrays["speakers"])
    else:
        assert set(arrays["speakers"]) == {""}
    if level == "window":  # 3 s at a 0.2 s hop: windows start at 0, 0.2, ... 2.6, then maybe one at the tail
        assert np.allclose(arrays["start"][:14], 0.2 * np.arange(14)) and n - 14 in (0, 1)
        assert arrays["end"][-1] == pytest.approx(3.0)
    if level == "file":
        assert n == 1 and arrays["start"][0] == 0 and arrays["end"][0] == pytest.approx(3.0, abs=0.01)


def test_embed_file_level_gives_one_row_per_input_in_input_order(diarize, succeeds, make_audio, voices, tmp_path):
    inputs = [make_audio("c.wav"), make_audio("a.wav", voices(speakers=1)), make_audio("b.wav", voices(seed=1))]
    succeeds(diarize("embed", *inputs, "--level", "file", "--out", tmp_path / "files.npz"))
    with np.load(tmp_path / "files.npz") as z:
        assert list(z["paths"]) == [str(p) for p in inputs]
        assert z["embeddings"].shape == (3, 32)


def test_embed_says_which_options_its_level_does_not_use(diarize, succeeds, make_audio, tmp_path):
    wav = make_audio("a.wav")
    for level, args, said in [("window", ["--vad", "energy", "--cluster", "hdbscan"], "--vad and --cluster are"),
                              ("file", ["--vad", "energy", "--cluster", "hdbscan"], "--cluster is"),
                              ("window", ["--num-speakers", "2"], "the speaker count options are")]:
        stderr = succeeds(diarize("embed", wav, "--level", level, *args, "--out", tmp_path / "e.npz", "--force"))
        assert f"{said} not used at --level {level}" in stderr and stderr.count("not used") == 1
    assert "not used" not in succeeds(diarize("embed", wav, "--level", "segment", "--vad", "energy",
                                              "--cluster", "hdbscan", "--out", tmp_path / "e.npz", "--force"))


def test_embed_segments_and_speakers_take_the_count_as_cluster_does(diarize, succeeds, fails_cleanly, make_audio,
                                                                    voices, tmp_path):
    wav = make_audio("three.wav", voices(seconds=12.0, speakers=3))
    for k in (1, 2, 3):
        stderr = succeeds(diarize("embed", wav, "--level", "segment", "--num-speakers", k, "--vad", "energy",
                                  "--out", tmp_path / f"{k}.npz"))
        with np.load(tmp_path / f"{k}.npz") as z:
            found = len(set(z["speakers"]))
        # (the tiny test encoder leaves one of 3 without speech once every window goes to its nearest)
        assert found == k or f"{k} speakers asked for; {found} kept turns" in " ".join(stderr.split())
    result = diarize("embed", wav, "--level", "speaker", "--min-speakers", 3, "--max-speakers", 2,
                     "--out", tmp_path / "x.npz")
    assert result.exit_code == 2 and fails_cleanly(result, "--min-speakers 3")


@pytest.mark.parametrize("level", ["segment", "speaker", "file"])
def test_embed_of_a_recording_without_speech_says_so(diarize, succeeds, make_audio, tmp_path, level):
    silent = make_audio("quiet.wav", np.zeros(3 * 16000, np.float32))
    stderr = succeeds(diarize("embed", silent, "--level", level, "--out", tmp_path / "e.npz"))
    assert "warning:" in stderr and "no speech found" in stderr and "quiet" in stderr
    if level != "file":  # no rows, of the same kinds as ever: text stays text
        saved = np.load(tmp_path / "e.npz")
        assert len(saved["embeddings"]) == 0 and saved["paths"].dtype.kind == saved["speakers"].dtype.kind == "U"


def test_embed_json_is_valid_json_records(diarize, succeeds, make_audio, tmp_path):
    succeeds(diarize("embed", make_audio("two.wav"), "--level", "speaker", "--out", tmp_path / "spk.json"))
    records = json.loads((tmp_path / "spk.json").read_text())
    assert records and all(set(r) == {"path", "start", "end", "speaker", "embedding"} for r in records)
    assert all(len(r["embedding"]) == 32 and r["speaker"].startswith("SPEAKER_") for r in records)


@pytest.mark.parametrize("out, said", [("npz", "(e.g. two.npz)"), ("-", ".npz or .json path"),
                                       ("e.txt", ".npz or .json path")])
def test_embed_out_is_a_npz_or_json_path_and_a_format_name_is_answered_with_one(diarize, fails_cleanly, make_audio,
                                                                                out, said):
    result = diarize("embed", make_audio("two.wav"), "--out", out)
    fails_cleanly(result, f"--out {out}", said)
    assert result.exit_code == 2


def test_embed_of_audio_shorter_than_one_window_gives_one_padded_window(diarize, succeeds, make_audio, tmp_path):
    wav = make_audio("short.wav", 0.1 * np.random.default_rng(0).standard_normal(3200).astype(np.float32))
    succeeds(diarize("embed", wav, "--out", tmp_path / "short.npz"))
    with np.load(tmp_path / "short.npz") as z:
        assert z["embeddings"].shape == (1, 32)
        assert z["start"][0] == 0 and z["end"][0] == pytest.approx(0.2)


def test_embed_with_unreadable_inputs_names_every_one_and_writes_nothing(diarize, fails_cleanly, make_audio,
                                                                          tmp_path):
    bad, empty = tmp_path / "bad.wav", tmp_path / "empty.wav"
    bad.write_text("not audio")
    empty.write_bytes(b"")
    result = diarize("embed", make_audio("two.wav"), bad, empty, tmp_path / "gone.wav", "--out", tmp_path / "e.npz")
    errors = fails_cleanly(result, "3 of 4 inputs cannot be read")
    assert all(name in errors for name in ("bad.wav", "empty.wav", "gone.wav"))
    assert not (tmp_path / "e.npz").exists()


def test_a_file_shorter_than_one_window_or_under_8_khz_is_warned_of(diarize, succeeds, make_audio, tmp_path):
    short = make_audio("short.wav", np.zeros(3200, np.float32))
    low = make_audio("low.wav", np.zeros(6000, np.float32), sr=6000)
    stderr = succeeds(diarize("embed", short, low, "--out", tmp_path / "e.npz"))
    assert "short.wav: 0.20 s long, shorter than one 0.4 s window" in stderr
    assert "low.wav: sampled at 6000 Hz" in stderr


def test_nan_samples_are_warned_of_and_taken_as_silence(diarize, succeeds, make_audio, voices, tmp_path):
    wave = voices(seconds=3.0)
    wave[:8000] = np.nan
    path = make_audio("nan.wav", wave, subtype="FLOAT")
    assert "nan.wav: 8000 samples are NaN or infinite" in succeeds(diarize("cluster", path, "--out-dir", tmp_path))
    assert "NaN" not in succeeds(diarize("cluster", make_audio("fine.wav", subtype="FLOAT"), "--out-dir", tmp_path))


def test_embed_refuses_an_existing_output_without_force(diarize, fails_cleanly, succeeds, make_audio, tmp_path):
    out = tmp_path / "e.npz"
    out.write_bytes(b"old")
    fails_cleanly(diarize("embed", make_audio("two.wav"), "--out", out), "e.npz", "--force")
    assert out.read_bytes() == b"old"
    succeeds(diarize("embed", make_audio("two.wav"), "--out", out, "--force"))
    assert np.load(out)["embeddings"].shape[1] == 32


def test_embed_needs_an_npz_or_json_path(diarize, fails_cleanly, make_audio, tmp_path):
    fails_cleanly(diarize("embed", make_audio("two.wav"), "--out", tmp_path / "e.txt"), "e.txt")


# ---- evaluate, info, help


def test_evaluate_the_example_against_itself_gives_der_zero_and_json_rows(diarize, succeeds, tmp_path):
    result = diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--json", tmp_path / "scores.json")
    succeeds(result)
    rows = json.loads((tmp_path / "scores.json").read_text())
    assert [r["file"] for r in rows] == ["meeting", "TOTAL"]
    assert all(r["der"] == 0 and r["jer"] == 0 and r["ref_speakers"] == 3 for r in rows)
    assert all(type(r["ref_speakers"]) is int and type(r["hyp_speakers"]) is int for r in rows)
    assert all(r["collar"] == 0 and r["skip_overlap"] is False and r["uem"] is None for r in rows)  # how scored
    table = [line for line in result.stdout.splitlines() if "meeting" in line or "TOTAL" in line]
    assert len(table) == 2 and all("0.00" in line for line in table)


def test_evaluate_a_missing_hypothesis_is_an_error_naming_it(diarize, fails_cleanly, tmp_path):
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, tmp_path / "hyp.rttm"), "hyp.rttm")


def test_evaluate_a_malformed_rttm_names_file_and_line(diarize, fails_cleanly, tmp_path):
    hyp = tmp_path / "hyp.rttm"
    hyp.write_text("SPEAKER meeting 1 0.0 1.0 <NA> <NA> a <NA> <NA>\nSPEAKER meeting 1 zero\n")
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, hyp), f"{hyp}:2")


def test_evaluate_a_binary_file_is_an_error_naming_it(diarize, fails_cleanly, make_audio):
    assert "not an RTTM file" in fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, make_audio("two.wav")), "two.wav")


def test_evaluate_says_a_json_of_turns_is_not_rttm_and_refuses_an_endless_collar(diarize, fails_cleanly, tmp_path):
    turns = tmp_path / "meeting.json"
    turns.write_text('[{"start": 0.0, "end": 1.0, "speaker": "SPEAKER_00"}]\n')
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, turns), "meeting.json", "JSON, not RTTM", "--out rttm")
    result = diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--collar", "inf")
    fails_cleanly(result, "--collar inf")
    assert result.exit_code == 2


def test_evaluate_json_that_cannot_be_written_is_an_error(diarize, fails_cleanly, tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--json", blocker / "s.json"), "s.json")


def test_evaluate_refuses_an_existing_json_without_force(diarize, fails_cleanly, succeeds, tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text("earlier scores")
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--json", scores), "scores.json", "--force")
    assert scores.read_text() == "earlier scores"
    succeeds(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--json", scores, "--force"))
    assert json.loads(scores.read_text())[-1]["file"] == "TOTAL"


def test_evaluate_an_empty_reference_is_its_stem_with_no_speech(diarize, fails_cleanly, succeeds, tmp_path):
    empty = tmp_path / "empty.rttm"
    empty.write_text("")
    assert "meeting against empty" in fails_cleanly(diarize("evaluate", empty, EXAMPLE_RTTM), "no file id")
    silence = tmp_path / "meeting.rttm"
    silence.write_text("")
    succeeds(diarize("evaluate", silence, EXAMPLE_RTTM, "--json", tmp_path / "der.json"))
    total = json.loads((tmp_path / "der.json").read_text())[-1]
    assert total["der"] == 1 and total["total"] == 0 and total["hyp_speakers"] == 3


def _rttm(path, *file_ids, speaker="a"):
    path.write_text("".join(f"SPEAKER {f} 1 0.0 1.0 <NA> <NA> {speaker} <NA> <NA>\n" for f in file_ids))
    return path


def test_evaluate_warns_of_file_ids_found_on_one_side_only(diarize, succeeds, tmp_path):
    ref, hyp = _rttm(tmp_path / "ref.rttm", "meeting", "call"), _rttm(tmp_path / "hyp.rttm", "meeting", "other")
    stderr = succeeds(diarize("evaluate", ref, hyp))
    assert "no hypothesis for 1 of 2 reference files" in stderr and "call" in stderr
    assert "1 hypothesis file id is not in the reference, not scored: other" in stderr


def test_evaluate_with_no_file_id_in_common_is_an_error_naming_both_sides(diarize, fails_cleanly, tmp_path):
    hyp = _rttm(tmp_path / "hyp.rttm", "other")
    assert "other against meeting" in fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, hyp), "no file id")


def test_evaluate_warns_when_files_of_a_folder_disagree_about_one_file_id(diarize, succeeds, tmp_path):
    hyps = tmp_path / "hyps"
    hyps.mkdir()
    _rttm(hyps / "a.rttm", "meeting", speaker="x")
    _rttm(hyps / "b.rttm", "meeting", speaker="y")
    _rttm(hyps / "c.rttm", "meeting", speaker="x")  # the same turns again: not a disagreement
    stderr = succeeds(diarize("evaluate", EXAMPLE_RTTM, hyps))
    assert "file id meeting: the turns of a.rttm, b.rttm differ and were merged" in stderr


def test_evaluate_names_the_side_whose_files_disagree(diarize, succeeds, tmp_path):
    for side in ("refs", "hyps"):
        (tmp_path / side).mkdir()
        _rttm(tmp_path / side / "1.rttm", "m", speaker="x")
        _rttm(tmp_path / side / "2.rttm", "m", speaker="y")
    stderr = succeeds(diarize("evaluate", tmp_path / "refs", tmp_path / "hyps"))
    assert all(f"{tmp_path / side}: file id m: the turns of 1.rttm, 2.rttm differ" in stderr.replace("\n", "")
               for side in ("refs", "hyps"))


def test_evaluate_uem_scores_its_regions_and_names_the_files_it_leaves_whole(diarize, succeeds, tmp_path):
    ref, hyp = tmp_path / "ref.rttm", tmp_path / "hyp.rttm"
    ref.write_text("SPEAKER m 1 0 10 <NA> <NA> a <NA> <NA>\nSPEAKER m 1 10 10 <NA> <NA> b <NA> <NA>\n"
                   "SPEAKER n 1 0 5 <NA> <NA> a <NA> <NA>\n")
    hyp.write_text("SPEAKER m 1 0 20 <NA> <NA> x <NA> <NA>\nSPEAKER n 1 0 5 <NA> <NA> x <NA> <NA>\n")
    (tmp_path / "m.uem").write_text("m 1 0 10\nmm 1 0 10\n")
    result = diarize("evaluate", ref, hyp, "--uem", tmp_path / "m.uem", "--json", "-", "--collar", "0.25")
    stderr = succeeds(result)
    assert [r["der"] for r in json.loads(result.stdout)] == [0.0, 0.0, 0.0]  # without it, m's DER is 50%
    assert {(r["uem"], r["collar"]) for r in json.loads(result.stdout)} == {(str(tmp_path / "m.uem"), 0.25)}
    assert "does not list 1 of 2 reference files, scored whole: n" in stderr.replace("\n", "")
    assert "1 file ids of --uem" in stderr and "not in the reference, not used: mm" in stderr.replace("\n", "")


def test_evaluate_a_uem_that_is_malformed_or_names_no_reference_file_is_an_error(diarize, fails_cleanly, tmp_path):
    uem = tmp_path / "bad.uem"
    uem.write_text("meeting 1 5\n")
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--uem", uem), f"{uem}:1")
    uem.write_text("other 1 0 5\n")
    assert "no file id of --uem" in fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--uem", uem))
    fails_cleanly(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--uem", tmp_path / "none.uem"), "none.uem")


def test_evaluate_json_dash_writes_the_rows_to_stdout_instead_of_the_table(diarize, succeeds, tmp_path):
    result = diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--json", "-")
    succeeds(result)
    assert [r["file"] for r in json.loads(result.stdout)] == ["meeting", "TOTAL"]
    assert not (Path.cwd() / "-").exists()


@pytest.mark.parametrize("command", ["validate", "benchmark"])
def test_a_json_report_onto_a_folder_is_an_error_before_any_work(diarize, fails_cleanly, tmp_path, command):
    folder = tmp_path / "reports"
    folder.mkdir()
    args = [command, tmp_path / "nothing-here"] + ["--json", folder]
    assert "it is a folder" in fails_cleanly(diarize(*args), "reports")


def test_benchmark_of_a_file_that_is_not_audio_is_one_error_line(diarize, fails_cleanly, tiny_model, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    assert "not readable audio" in fails_cleanly(diarize("benchmark", text, "--model", tiny_model), "notes.wav")
    result = diarize("benchmark", tmp_path, "--minutes", "5")  # a folder: said before --minutes is called unused
    fails_cleanly(result, "is a folder")
    assert "warning" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine does not have")
def test_benchmark_asked_for_a_missing_gpu_says_so_before_building_a_recording(diarize, fails_cleanly):
    result = diarize("benchmark", "--device", "cuda", "--minutes", "600")
    assert "sees no CUDA GPU" in fails_cleanly(result, "cuda") and "building" not in result.stderr


@pytest.mark.parametrize("device", ["mps", "xpu", "tpu"])
def test_a_device_this_tool_cannot_use_is_an_error(diarize, fails_cleanly, make_audio, tiny_model, tmp_path, device):
    result = diarize("cluster", make_audio("two.wav"), "--out-dir", tmp_path, "--model", tiny_model, "--device", device)
    assert "use auto, cpu, cuda or cuda:N" in fails_cleanly(result, device)


def test_importing_the_package_or_the_cli_does_not_load_torch():
    """`diarize --help` answers at once, and a Ctrl-C before a command starts is not a traceback from
    inside `import torch`."""
    code = "import sys, diarize, diarize.cli; assert 'torch' not in sys.modules; diarize.PipelineConfig"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_version_prints_the_version(diarize, succeeds):
    import diarize as package

    result = diarize("--version")
    succeeds(result)
    assert result.stdout.strip() == f"diarize {package.__version__}"


def test_a_reference_without_the_files_turns_is_a_warning(diarize, succeeds, make_audio, tmp_path):
    stderr = succeeds(diarize("cluster", make_audio("two.wav"), "--out-dir", tmp_path, "--ref", EXAMPLE_RTTM))
    assert "warning:" in stderr and "no turns of file id two" in stderr


def test_info_shows_the_model_file_and_its_architecture(diarize, succeeds, tiny_model):
    result = diarize("info")
    succeeds(result)
    assert str(tiny_model) in result.stdout.replace("\n", "")
    assert "lstm_hidden: 16" in result.stdout and "n_outputs: 8" in result.stdout
    # the encoder's figures stand under its own line, not under the overlap detector's
    lines = result.stdout.splitlines()
    heads = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert lines[0].startswith("model") and lines[heads[-1]].startswith("overlap detector") and heads[-1] == len(lines) - 1


@pytest.mark.parametrize("command", [None] + [c.name or c.callback.__name__ for c in app.registered_commands])
def test_help_of_the_tool_and_of_every_command_has_an_example(command):
    from typer.testing import CliRunner

    for flag in ("--help", "-h"):
        result = CliRunner().invoke(app, ([command] if command else []) + [flag])
        assert result.exit_code == 0, result.output
        assert "Example" in result.stdout


@pytest.mark.parametrize("command", [c.name or c.callback.__name__ for c in app.registered_commands])
def test_help_in_an_80_column_terminal_shows_every_option_whole_and_the_example_on_one_line(command):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    names = [n for p in typer.main.get_command(app).commands[command].params if p.param_type_name == "option"
             for n in p.opts + p.secondary_opts]
    assert all(re.search(rf"(^|[\s,/]){re.escape(n)}([\s,/=]|$)", result.stdout, re.M) for n in names)
    after = result.stdout.split("Example:")[1].lstrip("\n").splitlines()
    assert after[0].strip().startswith("diarize ") and not after[1].strip()  # the command whole, to copy


def test_info_shows_an_overlap_detector_given_by_its_path(diarize, succeeds):
    from diarize.overlap import BUNDLED_DETECTOR, load_detector

    result = diarize("info", "--model", BUNDLED_DETECTOR)
    succeeds(result)
    assert "overlap detector" in result.stdout and f"threshold: {load_detector().threshold:.4f}" in result.stdout


def test_an_overlap_detector_given_as_the_encoder_is_named_for_what_it_is(diarize, fails_cleanly, make_audio):
    from diarize.overlap import BUNDLED_DETECTOR

    result = diarize("cluster", make_audio("two.wav"), "--model", BUNDLED_DETECTOR)
    assert "not a speaker encoder" in fails_cleanly(result, "overlap detector")


# ---- outputs are written whole or not at all


def fail_half_way(self, turns, file_id, stream):
    stream.write("SPEAKER half-written")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_that_fails_half_way_leaves_no_partial_or_temporary_file(diarize, fails_cleanly, make_audio,
                                                                        monkeypatch, tmp_path):
    monkeypatch.setattr(RTTMWriter, "write", fail_half_way)
    out = tmp_path / "out"
    result = diarize("cluster", make_audio("two.wav"), "--out-dir", out)
    line = fails_cleanly(result, "two.wav", str(out / "two.rttm"))
    assert "No space left on device" in line and ".tmp" not in line
    assert list(out.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_file(diarize, fails_cleanly, make_audio, monkeypatch, tmp_path):
    monkeypatch.setattr(RTTMWriter, "write", fail_half_way)
    (tmp_path / "two.rttm").write_text("previous result\n")
    fails_cleanly(diarize("cluster", make_audio("two.wav"), "--out-dir", tmp_path, "--force"), "two.rttm")
    assert (tmp_path / "two.rttm").read_text() == "previous result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.rttm", "two.wav"]


def test_embed_json_that_fails_half_way_leaves_nothing(diarize, fails_cleanly, make_audio, monkeypatch, tmp_path):
    def broken_dump(obj, f, **kwargs):
        f.write('[{"path": ')
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("diarize.embeddings.json.dump", broken_dump)
    out = tmp_path / "out" / "e.json"
    fails_cleanly(diarize("embed", make_audio("two.wav"), "--out", out), str(out))
    assert list(out.parent.iterdir()) == []


# ---- end to end, as a user runs it


def run_diarize(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest: threads only contend here
    return subprocess.run([sys.executable, "-m", "diarize", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_end_to_end_a_missing_input_is_one_error_line_and_exit_1(tiny_model, tmp_path):
    proc = run_diarize("cluster", "missing.wav", "--model", tiny_model, "--quiet", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: missing.wav: no such file", "error: 1 of 1 files failed"]
    assert list(tmp_path.iterdir()) == []


def test_end_to_end_rttm_on_stdout(tiny_model, make_audio, tmp_path):
    wav = make_audio("two.wav")
    proc = run_diarize("cluster", wav, "--model", tiny_model, "--out", "-", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout and all(line.startswith("SPEAKER two 1 ") for line in proc.stdout.splitlines())


def test_end_to_end_a_closed_stdout_ends_the_run_quietly(tiny_model, make_audio, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as in a shell
    proc = subprocess.Popen([sys.executable, "-m", "diarize", "cluster", make_audio("a.wav"), make_audio("b.wav"),
                             "--model", tiny_model, "--out", "-", "--quiet"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first turn is written (| head -0)
    assert proc.wait(timeout=120) == 1
    assert proc.stderr.read() == ""


def test_end_to_end_a_bad_model_with_workers_fails_at_once_instead_of_hanging(make_audio, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    proc = run_diarize("cluster", make_audio("a.wav"), make_audio("b.wav"), "--model", bad, "--workers", 2,
                       "--quiet", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {bad}: ") and len(proc.stderr.splitlines()) == 1


def test_a_worker_killed_in_the_middle_of_a_batch_costs_no_file_and_no_hang(tiny_model, make_audio, voices,
                                                                           monkeypatch):
    """A worker killed once (by hand, or by the kernel for another process's memory): the files not yet
    done are diarized again, and every result comes back, in input order."""
    import multiprocessing
    import signal

    from diarize import runner
    from diarize.pipeline import Diarization

    pools, real = [], runner.ProcessPoolExecutor
    monkeypatch.setattr(runner, "ProcessPoolExecutor", lambda *args: pools.append(args[0]) or real(*args))
    # the first file short, the others 30 s: files are still in flight when the first result is in
    long = voices(seconds=30.0)
    files = [make_audio(f"f{i}.wav", None if i == 0 else long) for i in range(6)]
    config = {"config": {"overlap": False}}
    results = []
    for path, result in runner.diarize_files(files, str(tiny_model), "cpu", config, workers=2):
        if not results:
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
        results.append((path, result))
    assert [p for p, _ in results] == files
    assert all(isinstance(r, Diarization) for _, r in results), [r for _, r in results if isinstance(r, str)]
    assert pools[0] == 2 and len(pools) > 1  # the files left went again in a new pool


def test_a_file_whose_worker_dies_every_time_is_reported_and_the_others_are_diarized(monkeypatch):
    """Once a worker has died, the files not yet done go again one at a time: the one whose worker dies
    then is named, and the rest are diarized (by a pool standing in for the process pool: a file named
    bad.wav kills its worker, and in a pool of several b.wav, in flight with it, is lost too)."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from diarize import runner

    widths = []

    class Pool:
        def __init__(self, width, *args):
            widths.append(width)
            self.width, self.broken = width, False

        def submit(self, fn, path, options):
            if path.name == "bad.wav" or (self.width > 1 and path.name == "b.wav"):  # b.wav: in flight with it
                self.broken = True
            future = Future()
            if self.broken:
                future.set_exception(BrokenProcessPool("a process died"))
            else:
                future.set_result((path, "diarized"))
            return future

        def shutdown(self, wait, cancel_futures):
            pass

    monkeypatch.setattr(runner, "ProcessPoolExecutor", Pool)
    files = [Path(name) for name in ("a.wav", "b.wav", "bad.wav", "c.wav", "d.wav")]
    results = list(runner._results(files, None, "cpu", {}, workers=2))
    assert [p for p, _ in results] == files
    assert [r for _, r in results] == ["diarized", "diarized",
                                       "bad.wav: the process diarizing it died (killed, or out of memory?)",
                                       "diarized", "diarized"]
    assert widths == [2, 1, 2]  # after a death, one at a time until the file is found; then all at once


def test_the_reference_is_never_overwritten_by_the_turns_found(diarize, fails_cleanly, make_audio, tmp_path):
    audio = make_audio("meeting.wav")
    ref = tmp_path / "meeting.rttm"
    ref.write_text(EXAMPLE_RTTM.read_text())
    result = diarize("cluster", audio, "--out", "rttm", "--out-dir", tmp_path, "--ref", ref, "--force")
    fails_cleanly(result, "meeting.rttm", "--ref")
    assert result.exit_code == 2
    assert ref.read_text() == EXAMPLE_RTTM.read_text()
    fails_cleanly(diarize("cluster", audio, "--out-dir", tmp_path, "--ref", tmp_path, "--force"), "--ref")
    # an input left out as done writes nothing: its reference among the outputs is no clash
    result = diarize("cluster", audio, "--out-dir", tmp_path, "--ref", ref, "--skip-existing")
    assert result.exit_code == 0 and "nothing to do" in result.stderr and ref.read_text() == EXAMPLE_RTTM.read_text()
    # ...but one whose timeline is missing is done again: its turns would overwrite the reference
    result = diarize("cluster", audio, "--out-dir", tmp_path, "--ref", ref, "--plot", tmp_path / "t.png",
                     "--skip-existing", "--force")
    fails_cleanly(result, "meeting.rttm", "--ref")
    assert ref.read_text() == EXAMPLE_RTTM.read_text()


def test_two_inputs_of_one_file_id_are_refused_on_stdout(diarize, fails_cleanly, make_audio, tmp_path):
    a, b = make_audio("clip.wav"), make_audio("clip.flac")
    fails_cleanly(diarize("cluster", a, b, "--out", "-"), "clip.wav", "clip.flac", "file id clip")


def test_out_repeated_writes_every_format_named(diarize, succeeds, make_audio, tmp_path):
    audio = make_audio("a.wav")
    succeeds(diarize("cluster", audio, "-o", "csv", "-o", "srt", "-o", "csv", "--out-dir", tmp_path, "-q"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.srt", "a.wav"]
    result = diarize("cluster", audio, "-o", "-", "-o", "json", "--out-dir", tmp_path, "-q")
    assert "SPEAKER a" in succeeds(result) + result.stdout and (tmp_path / "a.json").exists()
    (tmp_path / "a.json").unlink()
    succeeds(diarize("cluster", audio, "-o", "json", "-o", tmp_path / "." / "a.json", "--out-dir", tmp_path, "-q"))
    assert (tmp_path / "a.json").exists()  # one file, however it is spelt


def test_evaluate_table_in_a_file_keeps_whole_file_ids(diarize, succeeds, tmp_path):
    ids = [f"conversation_in_a_room_{k:03d}" for k in range(3)]
    ref = _rttm(tmp_path / "ref.rttm", *ids)
    result = diarize("evaluate", ref, ref)  # CliRunner's stdout is no terminal: rich would use 80 columns
    succeeds(result)
    assert all(i in result.stdout for i in ids), result.stdout


def test_an_input_whose_outputs_cannot_all_be_written_keeps_none(diarize, make_audio, tmp_path, monkeypatch):
    from diarize import plot  # not `import diarize.plot`: that would hide the fixture of that name

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(plot, "plot_timeline", broken)
    audio = make_audio("a.wav")
    result = diarize("cluster", audio, "--out", "all", "--out-dir", tmp_path, "--plot", tmp_path / "a.png")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # no turns, no timeline
    # with --force, the files a failed run would have replaced are as they were
    (tmp_path / "a.rttm").write_text("old\n")
    result = diarize("cluster", audio, "--out-dir", tmp_path, "--plot", tmp_path / "a.png", "--force")
    assert result.exit_code == 1 and (tmp_path / "a.rttm").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rttm", "a.wav"]  # no copies left behind
    result = diarize("cluster", audio, "--out", "-", "--plot", tmp_path / "a.png")
    assert "SPEAKER a" in result.stdout and "its turns went to stdout" in result.stderr


@pytest.mark.parametrize("command", [("cluster", "--workers", "1"), ("cluster", "--workers", "2"),
                                     ("embed", "--level", "window"), ("embed", "--level", "segment"),
                                     ("embed", "--level", "speaker"), ("embed", "--level", "file")])
def test_each_file_warning_is_printed_once(diarize, succeeds, make_audio, voices, tmp_path, command):
    wave = voices(seconds=3.0)
    wave[:800] = np.nan
    nan = make_audio("nan.wav", wave, subtype="FLOAT")
    low = make_audio("low.wav", voices(seconds=3.0, sr=6000), sr=6000)
    out = ("--out-dir", tmp_path / "o") if command[0] == "cluster" else ("--out", tmp_path / "e.npz")
    stderr = succeeds(diarize(command[0], nan, low, *command[1:], *out))
    assert stderr.count("nan.wav: 800 samples are NaN") == 1 and stderr.count("low.wav: sampled at 6000") == 1


@pytest.mark.parametrize("args, named", [
    (("--plot", "timeline.jpg"), "--plot"),
    (("--seed", "-5"), "--seed"),
    (("--seed", str(2**32)), "--seed"),
    (("--device", "gpu", "--model", "TINY"), "device 'gpu'"),
    (("--model", "nosuch"), "unknown model 'nosuch'"),
    (("--model", "FOLDER"), "is a folder, not a model file"),
])
def test_options_no_run_could_use_are_usage_errors(diarize, make_audio, tmp_path, tiny_model, args, named):
    # a --model given keeps the fixture's --device off
    args = [tiny_model if a == "TINY" else tmp_path if a == "FOLDER" else a for a in args]
    result = diarize("cluster", make_audio("a.wav"), "--out-dir", tmp_path, *args)
    assert result.exit_code == 2 and named in result.output
    assert not (tmp_path / "a.rttm").exists()


def test_device_names_are_read_in_any_case(diarize, succeeds, make_audio, tmp_path, tiny_model):
    succeeds(diarize("cluster", make_audio("a.wav"), "--out-dir", tmp_path, "--device", "CPU", "--model", tiny_model))


def test_the_api_lists_what_it_offers():
    import diarize as api

    assert {"diarize", "load_model", "PipelineConfig", "write_turns"} <= set(dir(api))


def test_scoring_with_no_reference_speech_left_says_so(diarize, succeeds):
    stderr = succeeds(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM, "--collar", "1000"))
    assert "no reference speech is left to score once the collar of 1000 s" in stderr
    assert "no reference speech" not in succeeds(diarize("evaluate", EXAMPLE_RTTM, EXAMPLE_RTTM))


def test_benchmark_json_on_stdout_holds_the_json_alone(diarize, make_audio):
    result = diarize("benchmark", make_audio("a.wav"), "--json", "-", "--device", "cpu", "--vad", "energy")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["audio_seconds"] == pytest.approx(3.0)
    assert "real time" in result.stderr


def test_a_model_without_calibration_is_refused_once_before_any_audio_is_read_unless_told_the_count(
        diarize, fails_cleanly, succeeds, make_audio, tiny_model, tmp_path):
    from diarize.model import load_checkpoint

    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in load_checkpoint(tiny_model).items() if k != "calibration"}, bare)
    inputs = [make_audio("a.wav"), make_audio("b.wav")]
    error = fails_cleanly(diarize("cluster", *inputs, "--model", bare, "--device", "cpu", "--out-dir", tmp_path),
                          "bare.pt", "calibrat")
    assert error.count("error:") == 1 and not list(tmp_path.glob("*.rttm"))
    fails_cleanly(diarize("embed", *inputs, "--level", "speaker", "--model", bare, "--out", tmp_path / "e.npz"),
                  "bare.pt", "calibrat")
    succeeds(diarize("cluster", *inputs, "--model", bare, "--num-speakers", "2", "--out-dir", tmp_path))
    succeeds(diarize("embed", *inputs, "--level", "window", "--model", bare, "--out", tmp_path / "e.npz"))


def test_a_missing_overlap_detector_is_said_once_and_only_overlap_detection_needs_it(
        diarize, fails_cleanly, succeeds, make_audio, tmp_path, monkeypatch):
    import diarize.overlap as overlap
    from diarize.pipeline import cached_detector

    monkeypatch.setattr(overlap, "BUNDLED_DETECTOR", tmp_path / "gone.pt")
    cached_detector.cache_clear()  # loaded once a process: this one may hold it from an earlier test
    inputs = [make_audio("a.wav"), make_audio("b.wav")]
    error = fails_cleanly(diarize("cluster", *inputs, "--out-dir", tmp_path), "gone.pt", "--no-overlap")
    assert error.count("error:") == 1 and not list(tmp_path.glob("*.rttm"))
    succeeds(diarize("cluster", *inputs, "--out-dir", tmp_path, "--no-overlap"))
    succeeds(diarize("embed", *inputs, "--level", "speaker", "--out", tmp_path / "e.npz"))


def test_sigterm_ends_any_command_as_ctrl_c_does_with_the_shells_status_for_it(make_audio, tiny_model, tmp_path,
                                                                              monkeypatch, capsys):
    import signal
    import time

    import diarize.runner as runner
    from diarize.cli import main

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives well before this ends
    monkeypatch.setattr(runner, "diarize_files", terminated)
    monkeypatch.setattr(sys, "argv", ["diarize", "cluster", str(make_audio("a.wav")), "--model", str(tiny_model),
                                      "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 143 and not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # as it was before
    assert "interrupted: what was written is whole" in capsys.readouterr().err  # said, as train says its own
