"""Scoring against reference RTTMs: diarization and Jaccard error rates with pyannote.metrics."""
from __future__ import annotations

import math
from pathlib import Path

from .writers import Turn, merge_turns, read_rttm, rttm_id, to_annotation


def load_rttms(path: str | Path, merged: dict[str, list[str]] | None = None) -> dict[str, list[Turn]]:
    """Turns by file id from one RTTM file or from every *.rttm file of a folder (merged by file id).
    `merged`, when given, receives the file ids whose files give different turns (one recording split over
    files, or two recordings under one id), each with the first file of every version."""
    path = Path(path)
    files = sorted(path.glob("*.rttm")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .rttm files in this folder")
    found: dict[str, dict[frozenset, str]] = {}  # file id -> each distinct set of its turns -> first file giving it
    for f in files:
        # an RTTM without SPEAKER lines is its stem's recording with no speech (a reference of silence or
        # noise, against which any speech found is false alarm; what `cluster` writes for a silent input)
        for file_id, turns in (read_rttm(f) or {rttm_id(f.stem): []}).items():
            found.setdefault(file_id, {}).setdefault(frozenset(turns), f.name)
    if merged is not None:
        merged.update({file_id: list(sets.values()) for file_id, sets in found.items() if len(sets) > 1})
    # a folder may hold both per-file RTTMs and a combined one: a turn listed twice counts once
    return {file_id: sorted(set().union(*sets)) for file_id, sets in found.items()}


def read_uem(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Scored regions by file id from a NIST UEM file (`file channel start end` a line; blank lines and
    `;;` comments skipped); a malformed line raises ValueError naming file and line."""
    out: dict[str, list[tuple[float, float]]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # -sig: an editor's byte-order mark
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UEM file (not UTF-8 text)") from None
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith(";;"):
            continue
        try:
            if len(fields) != 4:
                raise ValueError("expected 'file channel start end'")
            start, end = float(fields[2]), float(fields[3])
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
                raise ValueError("start and end must be finite, with 0 <= start < end")
        except ValueError as e:
            raise ValueError(f"{path}:{n}: malformed UEM line {line.strip()!r}: {e}") from None
        out.setdefault(fields[0], []).append((start, end))
    if not out:
        raise ValueError(f"{path}: lists no regions (expected lines 'file channel start end')")
    return out


def _rate(seconds: float, total: float) -> float:
    # pyannote's convention when there is no reference speech: 0 without errors, 1 with any
    return seconds / total if total else float(seconds > 0)


def _row(file: str, der: float, jer: float, c: dict, ref_speakers: int, hyp_speakers: int) -> dict:
    total = c["total"]
    if not ref_speakers:  # pyannote gives JER 1 with no reference speaker at all: the DER's convention instead
        jer = float(hyp_speakers > 0)
    return {"file": file, "der": der, "missed": _rate(c["missed detection"], total),
            "false_alarm": _rate(c["false alarm"], total), "confusion": _rate(c["confusion"], total),
            "total": total, "jer": jer, "ref_speakers": ref_speakers, "hyp_speakers": hyp_speakers}


def _own_overlaps_joined(turns: list[Turn]) -> list[Turn]:
    """A speaker's overlapping turns joined into one (md-eval joins them too): kept apart, the speaker would
    be scored as talking twice at once. Turns that only touch stay apart, as pyannote scores them (a
    collar at their boundary); RTTM times are read to the microsecond, so an overlap is one beyond that."""
    return merge_turns(turns, gap=-1e-7)


def score(reference: dict[str, list[Turn]], hypothesis: dict[str, list[Turn]], collar: float = 0.0,
          skip_overlap: bool = False, uem: dict[str, list[tuple[float, float]]] | None = None) -> list[dict]:
    """DER, its parts and JER for every file id of `reference`, then a "TOTAL" row.

    Speaker labels are matched by the optimal (Hungarian) mapping, so names need not agree. A file
    missing from `hypothesis` is scored as all missed; hypothesis files absent from the reference are
    ignored. `collar` is pyannote's TOTAL collar in seconds: collar=0.5 ignores 0.25 s on each side of
    every reference boundary. `skip_overlap` leaves out regions where reference speakers overlap. `uem`
    (file id -> (start, end) regions, as `read_uem` gives) limits scoring to those regions; a file it does
    not list is scored over the extent of its reference and hypothesis together.

    Each row: file, der, missed, false_alarm, confusion (fractions of the scored reference speech),
    total (scored reference speech, seconds, after collar and overlap removal), jer, ref_speakers,
    hyp_speakers. TOTAL pools the error seconds over files (pyannote's abs(metric)); its jer is the mean
    over all reference speakers and its speaker counts are summed over files.
    """
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der_metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    jer_metric = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)
    rows, n_ref, n_hyp = [], 0, 0
    for file_id in sorted(reference):
        ref, hyp = (to_annotation(_own_overlaps_joined(turns), file_id)
                    for turns in (reference[file_id], hypothesis.get(file_id, [])))
        if uem and file_id in uem:
            scored = Timeline([Segment(s, e) for s, e in uem[file_id]], uri=file_id).support()
        else:  # the region pyannote would guess itself (both extents), given explicitly to silence its warning
            extent = ref.get_timeline().extent() | hyp.get_timeline().extent()
            scored = Timeline([extent] if extent else [], uri=file_id)
        c = der_metric(ref, hyp, uem=scored, detailed=True)
        jer = jer_metric(ref, hyp, uem=scored)
        speakers = len(ref.crop(scored).labels()), len(hyp.crop(scored).labels())  # those scored
        n_ref, n_hyp = n_ref + speakers[0], n_hyp + speakers[1]
        rows.append(_row(file_id, c["diarization error rate"], jer, c, *speakers))
    rows.append(_row("TOTAL", abs(der_metric), abs(jer_metric), der_metric.accumulated_, n_ref, n_hyp))
    return rows
