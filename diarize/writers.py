"""Speaker turns and their file formats: merge turns, write rttm/json/csv/srt atomically, read rttm/json."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator


@dataclass(frozen=True, order=True)
class Turn:
    """One speaker talking from `start` to `end`, in seconds."""
    start: float
    end: float
    speaker: str


def merge_turns(turns: Iterable[Turn], gap: float = 0.0) -> list[Turn]:
    """Join consecutive turns of one speaker separated by at most `gap` seconds (overlapping ones always
    join); drop empty turns. Returns turns sorted by (start, end, speaker)."""
    merged: list[Turn] = []
    for t in sorted((t for t in turns if t.end > t.start), key=lambda t: (t.speaker, t.start, t.end)):
        last = merged[-1] if merged else None
        if last is not None and last.speaker == t.speaker and t.start - last.end <= gap:
            merged[-1] = Turn(last.start, max(last.end, t.end), t.speaker)
        else:
            merged.append(t)
    return sorted(merged)


class Writer:
    """One output format; `write` puts `turns` of the recording `file_id` on a text stream."""
    extension: str = ""

    def write(self, turns: Iterable[Turn], file_id: str, stream: IO[str]) -> None:
        raise NotImplementedError


def rttm_id(file_id: str) -> str:
    """The RTTM name of a recording: "team call" -> team_call, since RTTM fields are space-separated."""
    return "_".join(file_id.split()) or "_"


class RTTMWriter(Writer):
    extension = "rttm"

    def write(self, turns, file_id, stream):
        file_id = rttm_id(file_id)
        for t in sorted(turns):
            if not t.speaker or any(c.isspace() for c in t.speaker):  # RTTM fields are space-separated
                raise ValueError(f"speaker label {t.speaker!r} cannot be written to RTTM")
            start, end = round(t.start, 3), round(t.end, 3)  # the end the other formats write, to the ms
            stream.write(f"SPEAKER {file_id} 1 {start:.3f} {end - start:.3f} "
                         f"<NA> <NA> {t.speaker} <NA> <NA>\n")


class JSONWriter(Writer):
    extension = "json"

    def write(self, turns, file_id, stream):
        records = [{"start": round(t.start, 3), "end": round(t.end, 3), "speaker": t.speaker}
                   for t in sorted(turns)]
        json.dump(records, stream, indent=2)
        stream.write("\n")


class CSVWriter(Writer):
    extension = "csv"

    def write(self, turns, file_id, stream):
        out = csv.writer(stream, lineterminator="\n")
        out.writerow(["start", "end", "speaker"])
        out.writerows([f"{t.start:.3f}", f"{t.end:.3f}", t.speaker] for t in sorted(turns))


def srt_time(seconds: float) -> str:
    """HH:MM:SS,mmm as subtitles want it."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


class SRTWriter(Writer):
    extension = "srt"

    def write(self, turns, file_id, stream):
        for i, t in enumerate(sorted(turns), start=1):
            stream.write(f"{i}\n{srt_time(t.start)} --> {srt_time(t.end)}\n{t.speaker}\n\n")


WRITERS = {w.extension: w for w in (RTTMWriter, JSONWriter, CSVWriter, SRTWriter)}
FORMATS = tuple(WRITERS)


def get_writer(fmt: str) -> Writer:
    """The writer for a format name ("rttm", "json", "csv", "srt", in any case)."""
    fmt = str(fmt).lower()
    if fmt not in WRITERS:
        raise ValueError(f"unknown output format {fmt!r}; available: {', '.join(FORMATS)}")
    return WRITERS[fmt]()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` and move it over `path` only once the block succeeds, so a
    reader never sees a half-written file; on any error the temporary file is removed. A missing folder
    is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files: keep the replaced file's permissions, else the usual 0644
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_turns(turns: Iterable[Turn], path: str | Path, fmt: str | None = None,
                file_id: str | None = None) -> None:
    """Write `turns` to `path` in `fmt` (default: the path's suffix). `path` "-" is stdout and then needs
    `fmt`. `file_id` (the RTTM recording name) defaults to the path's stem, "stdout" for "-"."""
    turns = list(turns)
    for t in turns:  # what read_rttm (and any scorer) refuses is not written
        if not (math.isfinite(t.start) and math.isfinite(t.end) and 0 <= t.start <= t.end):
            raise ValueError(f"turn {t.start}-{t.end} of {t.speaker!r}: times must be finite, from 0, end not "
                             f"before start")
    if str(path) == "-":
        if fmt is None:
            raise ValueError(f"writing to stdout needs a format; available: {', '.join(FORMATS)}")
        get_writer(fmt).write(turns, file_id or "stdout", sys.stdout)
        sys.stdout.flush()  # each file's turns leave now, and a closed pipe is met here, not at exit
        return
    path = Path(path)
    writer = get_writer(fmt if fmt is not None else path.suffix.lower().lstrip("."))
    with atomic_write(path) as f:
        writer.write(turns, file_id or path.stem, f)


RTTM_OTHER_TYPES = {"SPKR-INFO", "SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX", "NON-SPEECH",
                    "FILLER", "EDITING", "IP", "END-OF-SU", "SU", "CB", "A/P"}  # NIST records we skip


def read_rttm(path: str | Path) -> dict[str, list[Turn]]:
    """SPEAKER lines of an RTTM file, grouped by file id in file order. Blank lines, `;;` comments and
    other NIST record types are skipped; a malformed line raises ValueError naming file and line."""
    out: dict[str, list[Turn]] = {}
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: an editor's byte-order mark
            lines = list(f)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not an RTTM file (not UTF-8 text)") from None
    if "".join(lines).lstrip()[:1] in ("[", "{"):  # the turns `cluster --out json` writes
        raise ValueError(f"{path}: JSON, not RTTM (diarize cluster --out rttm writes RTTM)")
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith(";;") or fields[0].upper() in RTTM_OTHER_TYPES:
            continue
        try:
            if fields[0] != "SPEAKER" or len(fields) < 8:
                raise ValueError("expected 'SPEAKER file channel start duration <NA> <NA> speaker ...'")
            if len(fields) > 10:  # read as field 8, "Ann Smith" and "Ann Jones" would be one speaker
                raise ValueError(f"{len(fields)} fields where RTTM has 10 (a name with spaces?)")
            start, dur = float(fields[3]), float(fields[4])
            if not (math.isfinite(start) and math.isfinite(dur) and start >= 0 and dur >= 0):
                raise ValueError("start and duration must be finite and non-negative")
        except ValueError as e:
            raise ValueError(f"{path}:{n}: malformed RTTM line {line.strip()!r}: {e}") from None
        # rounding undoes the float error of start + duration; RTTM times never go below a microsecond
        out.setdefault(fields[1], []).append(Turn(start, round(start + dur, 6), fields[7]))
    return out


def read_json(path: str | Path) -> list[Turn]:
    """Turns from a JSON list of {"start", "end", "speaker"} records (what JSONWriter writes)."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise TypeError("the top level is not a list")
        return [Turn(float(r["start"]), float(r["end"]), str(r["speaker"])) for r in records]
    except (KeyError, TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a JSON list of {{start, end, speaker}} records "
                         f"({type(e).__name__}: {e})") from None


def to_annotation(turns: Iterable[Turn], uri: str):
    """A pyannote.core.Annotation of the turns (one track per turn, so overlaps of a speaker are kept)."""
    from pyannote.core import Annotation, Segment  # imported here: only scoring needs pyannote

    annotation = Annotation(uri=uri)
    for i, t in enumerate(turns):
        annotation[Segment(t.start, t.end), i] = t.speaker
    return annotation
