#!/usr/bin/env bash
# Reproduce the accuracy and speed figures of README.md and models/README.md.
# Needs the corpus, the dev conversations and the development suite of ../shared/DATA.md (~/corpus,
# ~/dev_conv, ~/dev-suite or SUITE=...); NOISE_DIR: the training noises, NOISE_FILE: one of them for the noisy
# one-speaker recordings (default: speechbrain's tests/samples/noise/noise1.wav within NOISE_DIR).
# Usage: NOISE_DIR=... bash examples/measure.sh [MODEL] [OUT]   (with the project's venv active: `diarize` on PATH)
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
command -v diarize >/dev/null || { echo "measure.sh: diarize is not on PATH: activate the venv (. .venv/bin/activate)" >&2; exit 1; }
MODEL=${1:-diarize-blstm}
OUT=${2:-runs/measure}
SHARED=${SHARED:-../shared}
mkdir -p "$OUT"

# DER of the hypothesis folder HYP against the references in IN, at collar 0 and 0.25 s each side
score() {
  diarize evaluate "$1" "$2" --json "$2.collar0.json" --force
  diarize evaluate "$1" "$2" --collar 0.25 --json "$2.collar025.json" --force
}

# encoder: EER, pair accuracy, ZHAW misclassification rate on the 63 dev speakers; EER on the held-out
# speakers of the other sources, on the dev speakers in rooms under noise, and inside the real clips
diarize validate ~/corpus/dev.tsv --model "$MODEL" --also ~/corpus/dev_x.tsv --rooms --clips "$SHARED/data/dev" \
  ${NOISE_DIR:+--noise-dir "$NOISE_DIR"} --json "$OUT/validate.json" --force

# diarization: the development suite (../shared/DATA.md), count estimated and told, for each back-end
# with one-speaker recordings of dev speakers, clean, in white noise at 10 dB and in a recorded noise at 5 dB
# SNR (one of the training noises of ../shared/DATA.md), which must come out as one speaker
SUITE=${SUITE:-~/dev-suite}
[ -d ~/dev_single ] || python "$(dirname "$0")/one_speaker.py" ~/corpus/dev.tsv ~/dev_single
[ -d ~/dev_single_white10 ] || python "$(dirname "$0")/one_speaker.py" ~/corpus/dev.tsv ~/dev_single_white10 --snr 10
[ -d ~/dev_single_noise5 ] || python "$(dirname "$0")/one_speaker.py" ~/corpus/dev.tsv ~/dev_single_noise5 --snr 5 \
  --noise "${NOISE_FILE:-${NOISE_DIR:?set NOISE_DIR to the training noises}/noise1.wav}"
for method in ahc hdbscan; do
  python "$(dirname "$0")/suite.py" "$SUITE" --model "$MODEL" --set-config cluster=$method \
    --cache "$OUT/embeddings" --json "$OUT/suite-$method.json" \
    --one-speaker ~/dev_single ~/dev_single_white10 ~/dev_single_noise5
done
# and with one speaker a frame (overlapped speech given no second speaker), with each back-end
for method in ahc hdbscan; do
  python "$(dirname "$0")/suite.py" "$SUITE" --model "$MODEL" --set-config cluster=$method overlap=0 \
    --cache "$OUT/embeddings" --json "$OUT/suite-$method-no-overlap.json"
done

# one voice must come out as one speaker, through the command line too
diarize cluster ~/dev_single --model "$MODEL" --out-dir "$OUT/single" --force --quiet
for f in "$OUT"/single/*.rttm; do
  echo "$(basename "$f"): $(awk '{print $8}' "$f" | sort -u | wc -l) speaker(s)"
done | tee "$OUT/single-counts.txt"

# noise: the dev conversations again with white noise at 30, 20 and 10 dB SNR (simulate.py --snr)
for snr in 30 20 10; do
  IN=~/dev_conv_snr$snr
  [ -d "$IN" ] || python "$SHARED/tools/simulate.py" --manifest ~/corpus/dev.tsv --root ~/corpus --out "$IN" \
    -n 8 --seconds 120 --seed 1 --snr "$snr"
  HYP="$OUT/conv-snr$snr"
  diarize cluster "$IN" --model "$MODEL" --out-dir "$HYP" --force --quiet
  score "$IN" "$HYP"
done

# telephone band: the dev conversations resampled to 8 kHz (examples/telephone.py), estimated and true count
IN=~/dev_conv_8k
[ -d "$IN" ] || python "$(dirname "$0")/telephone.py" ~/dev_conv "$IN"
for count in estimated true; do
  HYP="$OUT/conv-8k-$count"
  mkdir -p "$HYP"
  for ref in "$IN"/*.rttm; do
    k=()
    [ "$count" = true ] && k=(--num-speakers "$(awk '{print $8}' "$ref" | sort -u | wc -l)")
    diarize cluster "${ref%.rttm}.wav" --model "$MODEL" "${k[@]}" --out-dir "$HYP" --force --quiet
  done
  score "$IN" "$HYP"
done

# speed and memory on this machine
diarize benchmark --minutes 30 --json "$OUT/bench-30min.json" --force
diarize benchmark --minutes 30 --no-overlap --json "$OUT/bench-30min-no-overlap.json" --force
diarize benchmark --minutes 120 --json "$OUT/bench-120min.json" --force
diarize benchmark --minutes 30 --vad energy --json "$OUT/bench-30min-energy.json" --force
