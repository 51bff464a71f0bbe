"""Build one-speaker recordings from dev speakers (their utterances joined by short pauses) with a
reference RTTM each, to check that one voice comes out as one speaker.

Usage: python examples/one_speaker.py ~/corpus/dev.tsv ~/dev_single [-n 6] [--seconds 60] [--seed 7]
           [--snr DB [--noise FILE]]

With --snr the recordings are put under noise at that signal-to-noise ratio: white noise, or the recording
FILE (looped, from a random point) with --noise. The same command always builds the same files.
"""
import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("manifest", type=Path, help="dev.tsv of ../shared/DATA.md (path, speaker columns)")
parser.add_argument("out", type=Path, help="folder to write <name>.flac and <name>.rttm pairs to")
parser.add_argument("-n", type=int, default=6, help="recordings (one speaker each)")
parser.add_argument("--seconds", type=float, default=60.0, help="speech per recording")
parser.add_argument("--seed", type=int, default=7, help="seed of the speakers, utterances and noise drawn")
parser.add_argument("--snr", type=float, default=None, help="add noise at this SNR (dB)")
parser.add_argument("--noise", type=Path, default=None, help="noise recording for --snr (default: white noise)")
args = parser.parse_args()
if args.noise is not None and args.snr is None:
    parser.error("--noise needs --snr")
noise_wave = None
if args.noise is not None:
    import librosa

    noise_wave, _ = librosa.load(args.noise, sr=16000, mono=True)

by_speaker = defaultdict(list)
for row in csv.DictReader(args.manifest.open(), delimiter="\t"):
    by_speaker[row["speaker"]].append(args.manifest.parent / row["path"])
rng = np.random.default_rng(args.seed)
noise_rng = np.random.default_rng([args.seed, 1])  # its own draws: the same voices and utterances as without --snr
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
    if args.snr is not None:  # noise over the whole recording, pauses included, scaled against the speech
        if noise_wave is None:
            noise = noise_rng.standard_normal(len(wave)).astype(np.float32)
        else:
            start = int(noise_rng.integers(len(noise_wave)))
            noise = np.resize(np.roll(noise_wave, -start), len(wave)).astype(np.float32)
        power = np.mean(np.concatenate(parts[::2]) ** 2)
        wave = wave + noise * np.sqrt(power / 10 ** (args.snr / 10) / max(np.mean(noise ** 2), 1e-12))
        wave = (wave / max(1.0, np.abs(wave).max())).astype(np.float32)
    sf.write(args.out / f"single{k}.flac", wave, rate)
    (args.out / f"single{k}.rttm").write_text(
        f"SPEAKER single{k} 1 0.000 {len(wave) / rate:.3f} <NA> <NA> {speaker} <NA> <NA>\n")
    print(f"single{k}.flac: {speaker}, {len(wave) / rate:.1f} s")
