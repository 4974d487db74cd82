#!/usr/bin/env bash
# Rebuild src/cmmd/assets/demo-vae.safetensors, the video VAE the demo model generates in, the way
# the shipped one was made: the demo's 400 training clips (impacts, TRAIN seed 0, 3.6 s, 32x32),
# prepared as `cmmd demo --train` prepares them, then `cmmd vae train` with 4x downsampling
# (4x8x8 latents per frame) for 1,500 steps of 16 frames (about 8 minutes on 2 idle CPU cores;
# held-out PSNR 41.2 dB), and its EMA weights exported. A new VAE needs a new demo checkpoint
# (scripts/make_demo_checkpoint.sh): the checkpoint records the VAE's weights digest.
set -euo pipefail
cd "$(dirname "$0")/.."
work=outputs/demo-vae
.venv/bin/cmmd synth "$work/train_clips" --scene impacts --n 400 --seed 0 --duration 3.6 --size 32
.venv/bin/cmmd prepare "$work/train_clips" "$work/prepared" --size 32 --clip-seconds 1.8
.venv/bin/cmmd vae train "$work/prepared" --out "$work/vae" --downsample 4 --steps 1500 --batch-size 16 \
  --checkpoint-every 250
ckpt=$(cat "$work/vae/checkpoints/latest")
cp "$work/vae/checkpoints/$ckpt/ema.safetensors" src/cmmd/assets/demo-vae.safetensors
echo "wrote src/cmmd/assets/demo-vae.safetensors from $work/vae/checkpoints/$ckpt"
