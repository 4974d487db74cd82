#!/usr/bin/env bash
# Rebuild checkpoints/demo-tiny.safetensors the way the shipped one was made: `cmmd demo --train`
# (400 synthetic impacts clips, seed 0, 32x32, configs/demo_tiny.yaml, 10 minutes of training on
# 2 CPU cores), then its EMA weights exported. The shipped file stopped at step 2251 of the
# 2400-step schedule on an idle 2-core machine; a slower or faster machine stops elsewhere.
# Pass a different budget in minutes as $1 (0 trains the full 2400 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
work=outputs/demo-checkpoint
.venv/bin/cmmd demo --train --minutes "$minutes" --out "$work"
ckpt=$(cat "$work/run/checkpoints/latest")
cp "$work/run/checkpoints/$ckpt/ema.safetensors" checkpoints/demo-tiny.safetensors
echo "wrote checkpoints/demo-tiny.safetensors from $work/run/checkpoints/$ckpt"
