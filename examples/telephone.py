"""Copy recordings as a telephone line would keep them: resampled to 8 kHz (nothing above 4 kHz), written as
16-bit WAV, each with its reference RTTM, to measure diarization of band-limited audio.

Usage: python examples/telephone.py ~/dev_conv ~/dev_conv_8k
"""
import argparse
import shutil
from pathlib import Path

import librosa
import soundfile as sf

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("src", type=Path, help="folder of audio files with <stem>.rttm beside them")
parser.add_argument("out", type=Path, help="folder to write the 8 kHz copies and their RTTMs to")
args = parser.parse_args()

args.out.mkdir(parents=True, exist_ok=True)
for rttm in sorted(args.src.glob("*.rttm")):
    audio = next((p for p in rttm.parent.glob(rttm.stem + ".*") if p.suffix in (".flac", ".wav")), None)
    if audio is None:
        continue  # e.g. all.rttm, the references of the whole folder
    wave, rate = sf.read(audio, dtype="float32")
    sf.write(args.out / f"{rttm.stem}.wav", librosa.resample(wave, orig_sr=rate, target_sr=8000), 8000,
             subtype="PCM_16")
    shutil.copy(rttm, args.out / rttm.name)
