#!/usr/bin/env bash
# Rebuild src/cmmd/assets/demo-tiny.safetensors (package data: it ships in the wheel) the way the
# shipped one was made: `cmmd demo --train` (400 synthetic impacts clips, seed 0, 32x32,
# src/cmmd/assets/demo_tiny.yaml, latents of the shipped VAE (scripts/make_demo_vae.sh), 16 minutes of
# training on 2 CPU cores, twice the demo's default budget, the step count fitted to it), then its
# EMA weights exported. The README records the step count the shipped
# file reached; a slower or faster machine fits fewer or more.
# Pass a different budget in minutes as $1.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-16}
work=outputs/demo-checkpoint
.venv/bin/cmmd demo --train --minutes "$minutes" --out "$work"
ckpt=$(cat "$work/run/checkpoints/latest")
cp "$work/run/checkpoints/$ckpt/ema.safetensors" src/cmmd/assets/demo-tiny.safetensors
echo "wrote src/cmmd/assets/demo-tiny.safetensors from $work/run/checkpoints/$ckpt"
