"""What limits audio -> video: the measurements behind docs/A2V_DIAGNOSIS.md, side by side.

For each checkpoint, on clips of the VALIDATION split (never the TEST split), 50-step DDIM:
audio -> video event F1 (precision, recall, class accuracy) beside the shuffled-pairs chance
level, video -> audio F1, and the frames' high-frequency energy as a ratio to the ground truth's
(:func:`cmmd.eval.sharpness.laplacian_ratio`; clean frames are near 1). It also measures the
video output head as a linear map: from ``C x g x g`` features to the model's video tensor of
``c x H x W`` values per frame, its rank bounds what the network can ever predict; the rest of
the initial noise passes through the deterministic sampler untouched. For such a head,
``--head-range`` adds a run whose initial video noise is projected onto the head's range, and
the correlation between the unreachable part of the generated frames' error and that of the
initial noise. Usage::

    python benchmarks/a2v_ablation.py LABEL=CKPT [LABEL=CKPT ...] [--clips 16] [--head-range]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import cmmd.diffusion.samplers as samplers
from cmmd.data.splits import VALIDATION, read_clips, write_split_clips
from cmmd.eval.sharpness import laplacian_ratio
from cmmd.eval.sync.heldout import score_heldout
from cmmd.pipeline import Pipeline, SamplingSettings


def head_basis(pipe: Pipeline) -> tuple[torch.Tensor, int, int]:
    """Orthonormal basis ``(D, r)`` of the video head's range in the per-frame model tensor
    (``D = c * H * W`` values), its rank ``r`` and the feature count ``C * g * g``."""
    conv = pipe.model.video_out[-1]
    p = pipe.model.cfg.patch_size
    c, h, w = pipe.codec.latent_shape(pipe.size, pipe.size)
    g_h, g_w = h // p, w // p
    eye = torch.eye(conv.in_channels * g_h * g_w).reshape(-1, conv.in_channels, g_h, g_w)
    with torch.no_grad():
        out = F.pixel_shuffle(F.conv2d(eye, conv.weight, None, padding=conv.padding), p)
    matrix = out.reshape(eye.shape[0], -1).T  # (D, features)
    u, s, _ = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((s > s[0] * 1e-6).sum())
    return u[:, :rank], rank, eye.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", metavar="LABEL=CKPT")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--head-range", action="store_true",
                        help="also sample with the initial video noise projected onto the head's range")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = ["| system | head rank / values per frame | a->v F1 | precision / recall | class acc. | a->v shuffled F1 "
            "| v->a F1 | Laplacian energy / GT |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, ckpt in (s.split("=", 1) for s in args.systems):
            pipe = Pipeline.from_checkpoint(ckpt)
            names = write_split_clips(VALIDATION, Path(tmp), args.clips, args.seconds, pipe.size)
            clips = read_clips(Path(tmp), names, pipe.fps, pipe.sample_rate, pipe.size)
            basis, rank, features = head_basis(pipe)
            draw = samplers._randn
            variants = [("", draw)]
            if args.head_range:
                def projected(shape, generator, device, dtype, _draw=draw, _b=basis):
                    x = _draw(shape, generator, device, dtype)
                    if len(shape) != 5:  # audio noise unchanged
                        return x
                    flat = x.reshape(-1, _b.shape[0])
                    return (flat @ _b @ _b.T).reshape(shape)
                variants.append((", noise in head range", projected))
            settings = SamplingSettings("ddim", args.steps)
            v2a = pipe.generate("v2a", settings, frames=clips.frames)
            for suffix, noise in variants:
                samplers._randn = noise
                try:
                    a2v = pipe.generate("a2v", settings, wave=clips.waves)
                finally:
                    samplers._randn = draw
                table = score_heldout(names, clips.metas, v2a.mel, a2v.frames)["table"]
                t = lambda mode, key: table[mode][key]["mean"]  # noqa: E731
                ci = table["a2v"]["f1"]
                lap = laplacian_ratio(a2v.frames, clips.frames[:, : a2v.frames.shape[1]])
                dims = basis.shape[0]
                rows.append(f"| {label}{suffix} | {rank} / {dims} ({1 - rank / dims:.0%} unreachable) | "
                            f"{ci['mean']:.3f} [{ci['lo']:.2f}, {ci['hi']:.2f}] | {t('a2v', 'precision'):.3f} / "
                            f"{t('a2v', 'recall'):.3f} | {t('a2v', 'class_accuracy'):.3f} | "
                            f"{t('a2v_shuffled', 'f1'):.3f} | {t('v2a', 'f1'):.3f} | {lap:.1f} |")
                print(rows[-1], flush=True)
            if rank < basis.shape[0] and pipe.codec.name == "pixel":
                noise = torch.randn((len(names), a2v.frames.shape[1], *pipe.codec.latent_shape(pipe.size, pipe.size)),
                                    generator=torch.Generator().manual_seed(0))
                a2v = pipe.generate("a2v", settings, wave=clips.waves)
                err = (torch.from_numpy(a2v.frames).float() - torch.from_numpy(clips.frames[:, : a2v.frames.shape[1]])
                       .float()).div(127.5).permute(0, 1, 4, 2, 3).reshape(-1, basis.shape[0])
                n = noise.reshape(-1, basis.shape[0])
                perp = lambda x: x - x @ basis @ basis.T  # noqa: E731
                e, z = perp(err), perp(n)
                corr = float((e * z).sum() / (e.norm() * z.norm()))
                share = float(e.pow(2).sum() / err.pow(2).sum())
                print(f"{label}: {share:.0%} of the a->v error energy lies where the head cannot reach; there it "
                      f"correlates {corr:.2f} with the initial noise (features {features}, values {basis.shape[0]})")
    print("\n".join(rows))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
