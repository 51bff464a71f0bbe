"""Diarize the development suite (../shared/DATA.md: dev_ocean, dev_cross, dev_room, dev_real) with the count
estimated and told, and print DER per set at collar 0 and 0.25 s (overlap scored) with the exact counts.

    python examples/suite.py ~/dev-suite [--sets SET...] [--model M] [--overlap-model D] [--cache DIR] [--json OUT.json]
        [--set-config cluster=hdbscan overlap=0] [--one-speaker DIR ...]

`--one-speaker` folders hold one-speaker recordings (examples/one_speaker.py, clean and under noise): how many
come out as one speaker is printed too, since a count rule that splits one voice is no better for a lower DER.

Window embeddings and speech probabilities are cached per model and file (`--cache`), and overlap
probabilities per detector and file, so comparing clustering settings re-runs only the steps after them.
With overlap handling on, the detector's frame-level overlap precision and recall against the references
are printed too, and the false overlap as a share of reference speech.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

from diarize.audio import load_audio, log_mel
from diarize.evaluate import score
from diarize.model import load_model, resolve_model_path
from diarize.overlap import frame_classes, load_detector
from diarize.pipeline import PipelineConfig, diarize_windows, embed_windows
from diarize.writers import read_rttm

SETS = ("dev_ocean", "dev_cross", "dev_room", "dev_real")


def audio_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.flac"), *folder.glob("*.wav")])


def recordings(folder: Path) -> list[tuple[Path, Path]]:
    """(audio, reference RTTM) pairs of one set, by stem."""
    pairs = []
    for audio in audio_files(folder):
        ref = audio.with_suffix(".rttm")
        if ref.exists():
            pairs.append((audio, ref))
    return pairs


def cached_windows(audio: Path, encoder, model_path: Path, config: PipelineConfig, cache: Path | None):
    if cache is None:
        return embed_windows(audio, encoder, config)
    key = hashlib.sha1(f"{model_path.resolve()}:{model_path.stat().st_mtime}:{audio.resolve()}:{config.vad}:"
                       f"{config.window_hop}".encode()).hexdigest()[:16]
    path = cache / f"{audio.stem}-{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    windows = embed_windows(audio, encoder, config)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(windows))
    return windows


def cached_overlap(audio: Path, detector, cache: Path | None) -> np.ndarray:
    key = hashlib.sha1(f"{detector.source}:{Path(detector.source).stat().st_mtime}:{audio.resolve()}".encode())
    path = cache / f"{audio.stem}-overlap-{key.hexdigest()[:16]}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path)
    probs = detector.overlap_probability(log_mel(load_audio(audio))).astype(np.float16)
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, probs)
    return probs


def run_set(folder: Path, encoder, model_path: Path, config: PipelineConfig, cache: Path | None,
            detector=None) -> dict:
    refs, est, told = {}, {}, {}
    hit = {"tp": 0, "fp": 0, "fn": 0, "speech": 0}
    for audio, rttm in recordings(folder):
        ref = read_rttm(rttm)
        turns = ref.get(audio.stem) or next(iter(ref.values()))
        refs[audio.stem] = turns
        k = len({t.speaker for t in turns})
        windows = cached_windows(audio, encoder, model_path, config, cache)
        if detector is not None and config.overlap:
            windows.overlap = cached_overlap(audio, detector, cache)[: windows.n_frames]
            windows.overlap_threshold = detector.threshold
            truth = frame_classes(rttm, len(windows.overlap))
            found = windows.overlap >= detector.threshold
            hit["tp"] += int((found & (truth == 2)).sum())
            hit["fp"] += int((found & (truth != 2)).sum())
            hit["fn"] += int((~found & (truth == 2)).sum())
            hit["speech"] += int((truth > 0).sum())
        est[audio.stem] = diarize_windows(windows, audio.stem, config=config, calibration=encoder.calibration).turns
        told[audio.stem] = diarize_windows(windows, audio.stem, num_speakers=k, config=config,
                                           calibration=encoder.calibration).turns
    out = {"files": len(refs)}
    if hit["speech"]:
        out["overlap_detection"] = {"precision": hit["tp"] / max(hit["tp"] + hit["fp"], 1),
                                    "recall": hit["tp"] / max(hit["tp"] + hit["fn"], 1),
                                    "false_overlap_of_speech": hit["fp"] / hit["speech"]}
    for name, hyp in (("estimated", est), ("told", told)):
        rows = score(refs, hyp)
        total = rows[-1]
        out[name] = {"der": total["der"], "missed": total["missed"], "false_alarm": total["false_alarm"],
                     "confusion": total["confusion"], "der_collar025": score(refs, hyp, collar=0.5)[-1]["der"],
                     "exact_counts": sum(r["ref_speakers"] == r["hyp_speakers"] for r in rows[:-1]),
                     "counts": [[r["file"], r["ref_speakers"], r["hyp_speakers"]] for r in rows[:-1]]}
    return out


def one_speaker_counts(folders: list[Path], encoder, model_path: Path, config: PipelineConfig,
                       cache: Path | None) -> dict[str, int]:
    """Speakers found in each recording of the folders (count estimated)."""
    found = {}
    for folder in folders:
        for audio in audio_files(folder):
            windows = cached_windows(audio, encoder, model_path, config, cache)
            found[f"{folder.name}/{audio.stem}"] = len(diarize_windows(
                windows, audio.stem, config=config, calibration=encoder.calibration).speakers)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", type=Path, help="folder holding dev_ocean, dev_cross, dev_room, dev_real")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), metavar="SET",
                        help="sets to run, folders of SUITE (default: the four of the development suite)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for cached window embeddings")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--overlap-model", type=Path, default=None,
                        help="overlap detector (default: the bundled one, when overlap is on)")
    parser.add_argument("--one-speaker", nargs="*", type=Path, default=[], metavar="DIR",
                        help="folders of one-speaker recordings: count those found as one speaker")
    parser.add_argument("--set-config", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="PipelineConfig fields, e.g. cluster=ahc")
    args = parser.parse_args()
    fields = {f.name: f.type for f in dataclasses.fields(PipelineConfig)}
    overrides = {}
    for item in args.set_config:
        name, value = item.split("=", 1)
        if name not in fields:
            parser.error(f"unknown PipelineConfig field {name}")
        kind = str(fields[name])
        overrides[name] = (value if "str" in kind else float(value) if "float" in kind
                           else value.lower() in ("1", "true", "yes") if "bool" in kind else int(value))
    config = PipelineConfig(**overrides)
    for name in args.sets:  # a typo would print a DER of 0% over no files
        if not recordings(args.suite / name):
            parser.error(f"{args.suite / name}: no recordings with same-stem RTTMs (is SUITE the folder that "
                         f"holds {', '.join(SETS)}?)")
    model_path = resolve_model_path(args.model)
    encoder = load_model(model_path, "cpu")
    detector = load_detector(args.overlap_model) if config.overlap else None
    results = {}
    print(f"{'set':10} {'files':>5} {'DER est':>8} {'(miss/FA/conf)':>17} {'c0.25':>6} {'exact':>6} "
          f"{'DER told':>9} {'c0.25':>6}")
    for name in args.sets:
        r = results[name] = run_set(args.suite / name, encoder, model_path, config, args.cache, detector)
        e, t = r["estimated"], r["told"]
        parts = f"{100 * e['missed']:.1f}/{100 * e['false_alarm']:.1f}/{100 * e['confusion']:.1f}"
        print(f"{name:10} {r['files']:5d} {100 * e['der']:7.1f}% {parts:>17} {100 * e['der_collar025']:5.1f}% "
              f"{e['exact_counts']:>2}/{r['files']:<3} {100 * t['der']:8.1f}% {100 * t['der_collar025']:5.1f}%")
    for name, r in results.items():
        if "overlap_detection" in r:
            o = r["overlap_detection"]
            print(f"{name:10} overlap detection: precision {100 * o['precision']:.1f}%, recall "
                  f"{100 * o['recall']:.1f}%, false overlap {100 * o['false_overlap_of_speech']:.2f}% of speech")
    mean = {k: float(np.mean([results[s][k]["der"] for s in results])) for k in ("estimated", "told")}
    exact = sum(results[s]["estimated"]["exact_counts"] for s in results)
    files = sum(results[s]["files"] for s in results)
    print(f"{'mean':10} {files:5d} {100 * mean['estimated']:7.1f}% {'':17} {'':6} {exact:>2}/{files:<3} "
          f"{100 * mean['told']:8.1f}%")
    single = one_speaker_counts(args.one_speaker, encoder, model_path, config, args.cache)
    if single:
        split = {name: k for name, k in single.items() if k != 1}
        print(f"one-speaker recordings: {len(single) - len(split)} of {len(single)} found as one speaker"
              + (f" (not: {', '.join(f'{n} {k}' for n, k in split.items())})" if split else ""))
    if args.json:
        args.json.write_text(json.dumps({"config": dataclasses.asdict(config), "sets": results, "mean": mean,
                                         "one_speaker": single}, indent=1))


if __name__ == "__main__":
    main()
