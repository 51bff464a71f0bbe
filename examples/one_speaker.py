"""Build one-speaker recordings from dev speakers (their utterances joined by short pauses) with a
reference RTTM each, to check that one voice comes out as one speaker.

Usage: python examples/one_speaker.py ~/corpus/dev.tsv ~/dev_single [-n 6] [--seconds 60] [--seed 7]
"""
import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("manifest", type=Path, help="dev.tsv of ../shared/DATA.md (path, speaker columns)")
parser.add_argument("out", type=Path)
parser.add_argument("-n", type=int, default=6, help="recordings (one speaker each)")
parser.add_argument("--seconds", type=float, default=60.0, help="speech per recording")
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()

by_speaker = defaultdict(list)
for row in csv.DictReader(args.manifest.open(), delimiter="\t"):
    by_speaker[row["speaker"]].append(args.manifest.parent / row["path"])
rng = np.random.default_rng(args.seed)
args.out.mkdir(parents=True, exist_ok=True)
for k, speaker in enumerate(rng.choice(sorted(by_speaker), args.n, replace=False)):
    parts, speech = [], 0.0
    for path in rng.permutation(by_speaker[speaker]):
        wave, rate = sf.read(path, dtype="float32")
        parts += [wave, np.zeros(int(rate * rng.uniform(0.2, 0.8)), np.float32)]
        speech += len(wave) / rate
        if speech > args.seconds:
            break
    wave = np.concatenate(parts)
    sf.write(args.out / f"single{k}.flac", wave, rate)
    (args.out / f"single{k}.rttm").write_text(
        f"SPEAKER single{k} 1 0.000 {len(wave) / rate:.3f} <NA> <NA> {speaker} <NA> <NA>\n")
    print(f"single{k}.flac: {speaker}, {len(wave) / rate:.1f} s")
