#!/usr/bin/env bash
# Rebuild checkpoints/demo-tiny.safetensors exactly as shipped: 400 synthetic impacts clips
# (seed 0), prepared at 32x32, configs/demo_tiny.yaml trained for its full 3000 steps (no time
# limit), EMA weights exported. Pass a different step count as $1 to stop earlier.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3000}
work=outputs/demo-checkpoint
.venv/bin/cmmd synth "$work/train_clips" --scene impacts --n 400 --size 32 --seed 0
.venv/bin/cmmd prepare "$work/train_clips" "$work/prepared" --size 32
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/cmmd train configs/demo_tiny.yaml \
  "data.root=$work/prepared" "out_dir=$work/run" max_minutes=0 "steps=$steps" --resume
ckpt=$(cat "$work/run/checkpoints/latest")
cp "$work/run/checkpoints/$ckpt/ema.safetensors" checkpoints/demo-tiny.safetensors
echo "wrote checkpoints/demo-tiny.safetensors from $work/run/checkpoints/$ckpt"
