#!/usr/bin/env python3
"""Build the synthetic three-speaker example recording and its reference RTTM.

    apt-get install espeak-ng          # the TTS (GPL-3, ships its own voices)
    python examples/make_example.py    # writes examples/meeting.wav + meeting.rttm

Each turn is synthesised by the ``espeak-ng`` binary, the leading/trailing
silence espeak adds is trimmed, the clip is resampled to 16 kHz and placed on
a timeline.  The RTTM holds the exact extent of every trimmed clip (written to
the millisecond, as RTTM files usually are).  No randomness: the
pauses are written in the script below, so the same espeak-ng version always
builds the same files.

Needs only the standard library, numpy and soundfile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

SR = 16000
FILE_ID = "meeting"

# name -> espeak-ng arguments (voice+variant, pitch 0-99, speed in words/min).
# Note: espeak-ng 1.51 silently ignores a +variant on plain "en-gb"; hence
# "en-gb-x-rp".  Median F0 here: alice ~250 Hz, bob ~85 Hz, carol ~165 Hz.
VOICES = {
    "alice": ["-v", "en-us+f3", "-p", "70", "-s", "165"],   # female, high, US
    "bob": ["-v", "en-us+m3", "-p", "25", "-s", "140"],     # male, low, slow, US
    "carol": ["-v", "en-gb-x-rp+f4", "-p", "45", "-s", "180"],  # female, mid, fast, GB
}

# (speaker, gap before this turn in seconds, text).  A negative gap starts the
# turn before the previous one has finished (overlap).
TURNS = [
    ("alice", 0.50, "Good morning, everyone. Thanks for joining at such short notice."),
    ("bob", 0.40, "Morning."),
    ("carol", 0.30, "Hi Alice."),
    ("alice", 0.60, "We need to plan the client review for next week. "
                    "How about Tuesday afternoon?"),
    ("bob", 0.50, "Tuesday is difficult for me. I am at the other site all day."),
    ("carol", 0.30, "What about Wednesday morning?"),
    ("alice", 0.40, "Wednesday could work. Bob?"),
    ("bob", 0.70, "Wednesday morning is fine, but not before ten."),
    ("carol", 0.25, "Ten thirty, then. I will book the large room on the second floor."),
    ("bob", -0.50, "Sounds good."),                     # overlaps the end of carol's turn
    ("alice", 0.45, "Bob, could you prepare the slides on the budget and the new schedule?"),
    ("bob", 0.35, "Sure. I will send a draft by Monday evening."),
    ("carol", 0.50, "And I will take care of the agenda and the minutes."),
    ("alice", 0.30, "Great."),
    ("bob", 0.80, "Should we invite someone from the design team as well?"),
    ("alice", 0.40, "Good idea. I will ask Maria."),
    ("carol", 0.60, "Okay. So, Wednesday at ten thirty, in the large room."),
    ("alice", 0.20, "Yes. Thanks, everyone."),
]


def synth(text: str, args: list[str], tmpdir: str) -> tuple[np.ndarray, int]:
    path = os.path.join(tmpdir, "turn.wav")
    subprocess.run(["espeak-ng", *args, "-w", path, text], check=True)
    audio, sr = sf.read(path, dtype="float64", always_2d=True)
    return audio.mean(axis=1), sr


def trim(x: np.ndarray) -> np.ndarray:
    """Drop the (digital) silence espeak-ng puts before and after the speech."""
    thr = max(2e-3 * np.abs(x).max(), 4 / 32768)
    idx = np.flatnonzero(np.abs(x) > thr)
    return x[idx[0]: idx[-1] + 1]


def resample(x: np.ndarray, sr_in: int, sr_out: int = SR) -> np.ndarray:
    """Band-limited (FFT) resampling; output length round(len * sr_out / sr_in)."""
    if sr_in == sr_out:
        return x.copy()
    n_out = int(round(len(x) * sr_out / sr_in))
    pad = 2048  # zero padding so the FFT's circular wrap-around stays out of the clip
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    n_in_p = len(xp)
    n_out_p = int(round(n_in_p * sr_out / sr_in))
    spec = np.fft.rfft(xp)
    keep = min(len(spec), n_out_p // 2 + 1)
    y = np.fft.irfft(spec[:keep], n_out_p) * (n_out_p / n_in_p)
    start = int(round(pad * sr_out / sr_in))
    return y[start: start + n_out]


def build(outdir: str) -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng")

    clips = []  # (speaker, start_sample, samples)
    with tempfile.TemporaryDirectory() as tmpdir:
        t = 0  # end of the previous turn, in samples
        for spk, gap, text in TURNS:
            raw, sr = synth(text, VOICES[spk], tmpdir)
            clip = resample(trim(raw), sr)
            clip /= np.abs(clip).max()  # equal loudness for every turn
            start = max(0, t + int(round(gap * SR)))
            clips.append((spk, start, clip))
            t = start + len(clip)

    tail = int(round(0.5 * SR))
    total = max(s + len(c) for _, s, c in clips) + tail
    mix = np.zeros(total)
    for _, start, clip in clips:
        mix[start: start + len(clip)] += clip
    mix *= 0.9 / np.abs(mix).max()  # peak-normalise to -0.9 dBFS

    os.makedirs(outdir, exist_ok=True)
    wav_path = os.path.join(outdir, f"{FILE_ID}.wav")
    rttm_path = os.path.join(outdir, f"{FILE_ID}.rttm")
    sf.write(wav_path, mix, SR, subtype="PCM_16")
    with open(rttm_path, "w") as f:
        for spk, start, clip in clips:
            f.write(f"SPEAKER {FILE_ID} 1 {start / SR:.3f} {len(clip) / SR:.3f} "
                    f"<NA> <NA> {spk} <NA> <NA>\n")
    print(f"wrote {wav_path} ({total / SR:.2f} s, {len(clips)} turns, "
          f"{len(VOICES)} speakers) and {rttm_path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default=os.path.dirname(os.path.abspath(__file__)),
                   help="where to write meeting.wav and meeting.rttm (default: examples/)")
    build(p.parse_args().outdir)


if __name__ == "__main__":
    main()
