#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: CPU and CUDA embeddings and DER side by side, speed on 30 minutes of
# audio on each, training steps on the GPU, and the test suite with CUDA visible.
# Usage: bash examples/cuda_check.sh OUT [FOLDER of audio + RTTM ...]   (prints a log; figures in OUT)
set -uo pipefail
OUT=${1:-runs/cuda}
shift || true
mkdir -p "$OUT"
run() { echo "+ $*"; "$@"; }

python3 -c "import torch; assert torch.cuda.is_available(), 'this torch sees no CUDA GPU'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1

# embeddings: CUDA (cuDNN's LSTM) against CPU, window by window
for dev in cpu cuda; do
  run python3 -m diarize embed examples/meeting.wav --device "$dev" --out "$OUT/meeting-$dev.npz"
done
python3 - "$OUT/meeting-cpu.npz" "$OUT/meeting-cuda.npz" <<'EOF'
import sys, numpy as np
a, b = (np.load(f)["embeddings"] for f in sys.argv[1:])
print(f"{len(a)} windows: largest |cpu - cuda| {np.abs(a - b).max():.2e}, lowest cosine {(a * b).sum(1).min():.6f}")
EOF

# diarization on each folder, on each device
for dir in examples "$@"; do
  for dev in cpu cuda; do
    hyp="$OUT/$(basename "$dir")-$dev"
    run python3 -m diarize cluster "$dir" --device "$dev" --out-dir "$hyp" --force --quiet
    python3 -m diarize evaluate "$dir" "$hyp" --json "$hyp.json" --force | tail -2
  done
done

# speed: 30 minutes of audio, default pipeline
for dev in cuda cpu; do
  run python3 -m diarize benchmark --minutes 30 --device "$dev" --json "$OUT/bench-$dev.json" --force
done

# training on the GPU: synthetic voices of the test suite, 32 and 64 speakers x 4 windows a batch
python3 - /tmp/cuda-check-voices <<'EOF'
import sys, numpy as np
sys.path.insert(0, "tests")
from synthetic import random_voice, write_speakers
rng = np.random.default_rng(0)
write_speakers(sys.argv[1], [random_voice(rng) for _ in range(80)], 6, rng, seconds=(1.5, 2.5))
EOF
for s in 32 64; do
  run python3 -m diarize train /tmp/cuda-check-voices --out "$OUT/train-s$s" --device cuda --steps 400 \
    --speakers-per-batch "$s" --val-speakers 10 --val-every 200 --cache /tmp/cuda-check-cache 2>&1 | tail -3
  python3 - "$OUT/train-s$s/log.jsonl" "$s" <<'EOF'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
a, b = rows[0], rows[-1]
print(f"train S={sys.argv[2]} x 4: {(b['seconds'] - a['seconds']) / (b['step'] - a['step']):.3f} s a step "
      f"(steps {a['step']}-{b['step']}, validation included)")
EOF
done

# the test suite with CUDA visible (tests that name no device run on it)
run timeout 240 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -4
