"""`diarize embed`: embeddings of windows, segments, speakers or whole files, saved as .npz or .json."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from .model import SpeakerEncoder
from .pipeline import PipelineConfig, diarize, embed_windows, speech_mask, speech_windows
from .writers import atomic_write


def collect_embeddings(files: list[Path], encoder: SpeakerEncoder, level: str = "window",
                       config: PipelineConfig = PipelineConfig(),
                       on_file: Callable[[Path, list[str]], None] | None = None,
                       counts: dict | None = None) -> dict[str, np.ndarray]:
    """Rows of embeddings (N x D float32, L2-normalised) with start/end seconds (ends never past the end
    of the audio), source path and, for segments and speakers, the speaker label (found with `counts`:
    num_speakers, min_speakers, max_speakers and seed as `pipeline.diarize` takes them). `file` gives one row per
    input, in input order: the mean of its speech windows (all windows when no speech is found).
    on_file(path, warnings) follows each input. An unreadable input raises AudioError naming it."""
    rows: dict[str, list] = {"embeddings": [], "start": [], "end": [], "paths": [], "speakers": []}

    def add(emb, start, end, path, speakers=None):
        rows["embeddings"].append(np.asarray(emb, np.float32).reshape(-1, encoder.config.embedding_dim))
        rows["start"].append(np.atleast_1d(start))
        rows["end"].append(np.atleast_1d(end))
        rows["paths"] += [str(path)] * len(rows["start"][-1])
        rows["speakers"] += list(speakers) if speakers is not None else [""] * len(rows["start"][-1])

    for path in files:
        if level in ("window", "file"):
            w = embed_windows(path, encoder, config)
            warnings = list(w.warnings)
            if level == "window":
                # windows over the last frames reach a frame past the last sample: stop at the real end
                add(w.embeddings, w.start, np.minimum(w.end, w.duration), path)
            else:
                idx = speech_windows(w, speech_mask(w, config), config.hop_frames)
                if not len(idx):
                    warnings.append(f"{path}: no speech found; its embedding is the mean of all its windows")
                mean = w.embeddings[idx if len(idx) else slice(None)].mean(axis=0)
                add(mean / max(np.linalg.norm(mean), 1e-12), 0.0, w.duration, path)
        elif level in ("segment", "speaker"):
            d = diarize(path, encoder, config=config, **(counts or {}))
            warnings = d.warnings  # with "no speech found", no rows come from this input
            if level == "segment":
                names = [f"SPEAKER_{k:02d}" for k in d.segments["labels"]]
                add(d.segments["embeddings"], d.segments["start"], d.segments["end"], path, names)
            else:
                spans = [(min(t.start for t in d.turns if t.speaker == s), max(t.end for t in d.turns if t.speaker == s))
                         for s in d.speakers]
                add(d.speaker_embeddings, [a for a, _ in spans], [b for _, b in spans], path, d.speakers)
        else:
            raise ValueError(f"unknown level {level!r}; use window, segment, speaker or file")
        if on_file:
            on_file(path, warnings)
    dim = encoder.config.embedding_dim
    return {"embeddings": np.concatenate(rows["embeddings"]) if rows["embeddings"] else np.zeros((0, dim), np.float32),
            "start": np.concatenate(rows["start"]).astype(np.float64) if rows["start"] else np.zeros(0),
            "end": np.concatenate(rows["end"]).astype(np.float64) if rows["end"] else np.zeros(0),
            "paths": np.array(rows["paths"], dtype=str), "speakers": np.array(rows["speakers"], dtype=str)}


def save_embeddings(result: dict[str, np.ndarray], path: str | Path) -> None:
    """Atomically write .npz arrays, or .json records {path, start, end, speaker, embedding}."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **result)
        with atomic_write(path, "wb") as f:
            f.write(buffer.getvalue())
        return
    records = [{"path": p, "start": round(float(s), 3), "end": round(float(e), 3), "speaker": spk,
                "embedding": [round(float(v), 6) for v in emb]}
               for p, s, e, spk, emb in zip(result["paths"], result["start"], result["end"], result["speakers"],
                                            result["embeddings"])]
    with atomic_write(path) as f:
        json.dump(records, f)
