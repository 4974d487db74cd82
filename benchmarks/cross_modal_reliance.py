"""Does a joint model's prediction of one modality use the other? Matched vs mismatched partners.

For each checkpoint and clip, both modalities are noised to the same level with the same noise (as
joint training and replacement sampling feed the network), and the clean-signal error of each
modality's prediction is measured twice: beside the clip's own partner, and beside another clip's
partner (noised with the same noise). ``ratio = error(mismatched) / error(matched)``: 1 means the
prediction ignores the partner; above 1, the network reads the partner to denoise. A model that
cannot condition one modality on the other by replacement shows ratios near 1 at the levels where
the partner still carries timing (low and middle noise). Errors are in x0 space, so eps- and
v-prediction models compare; schedules differ in signal at the same t / T, so each row also gives
its alpha-bar (the signal fraction). Usage::

    python benchmarks/cross_modal_reliance.py LABEL=RUN [LABEL=RUN ...] --clips DIR [--levels 0.1,0.3,0.5,0.7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cmmd.data.splits import read_clips
from cmmd.diffusion.parameterization import q_sample, x0_from_prediction
from cmmd.diffusion.schedules import Schedule
from cmmd.pipeline import Pipeline


def derangement(n: int) -> torch.Tensor:
    """Index ``i -> i + 1 mod n``: every clip gets another clip's partner (n >= 2)."""
    if n < 2:
        raise ValueError("mismatched partners need at least 2 clips")
    return torch.roll(torch.arange(n), -1)


@torch.no_grad()
def reliance(model: torch.nn.Module, schedule: Schedule, prediction: str, video0: torch.Tensor,
             audio0: torch.Tensor, level: int, draws: int, seed: int = 0) -> dict[str, float]:
    """Mean x0 MSE of each modality beside its own and beside another clip's partner at step ``level``.

    ``video0`` (B, T, C, H, W), ``audio0`` (B, M, L) clean model tensors. Returns ``audio_own``,
    ``audio_other``, ``video_own``, ``video_other`` and the two ratios ``audio_ratio`` and
    ``video_ratio`` (other / own), averaged over ``draws`` noise draws and the clips, and the
    level's ``alpha_bar``.
    """
    gen = torch.Generator().manual_seed(seed)
    perm = derangement(video0.shape[0])
    n = torch.full((video0.shape[0],), float(level))
    ab = schedule.alpha_bar_at(n)
    sums = {"audio_own": 0.0, "audio_other": 0.0, "video_own": 0.0, "video_other": 0.0}
    for _ in range(draws):
        eps_v = torch.randn(video0.shape, generator=gen)
        eps_a = torch.randn(audio0.shape, generator=gen)
        video_n, audio_n = q_sample(video0, eps_v, ab), q_sample(audio0, eps_a, ab)
        # own: one pass gives both modalities; other: clip i's audio beside clip perm[i]'s noised
        # video, and clip i's video beside clip perm[i]'s noised audio. Errors are against clip i.
        out_v, out_a = model(video_n, audio_n, n, n)
        _, other_a = model(video_n[perm], audio_n, n, n)
        other_v, _ = model(video_n, audio_n[perm], n, n)
        for tag, v, a in (("own", out_v, out_a), ("other", other_v, other_a)):
            x0_a = x0_from_prediction(prediction, audio_n, a.float(), ab)
            x0_v = x0_from_prediction(prediction, video_n, v.float(), ab)
            sums[f"audio_{tag}"] += float((x0_a - audio0).pow(2).mean())
            sums[f"video_{tag}"] += float((x0_v - video0).pow(2).mean())
    res = {k: v / draws for k, v in sums.items()}
    res["audio_ratio"] = res["audio_other"] / res["audio_own"]
    res["video_ratio"] = res["video_other"] / res["video_own"]
    res["alpha_bar"] = float(ab[0])
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", metavar="LABEL=RUN")
    parser.add_argument("--clips", type=Path, required=True, help="folder of <name>.mp4 clips (>= 2)")
    parser.add_argument("--levels", default="0.1,0.3,0.5,0.7,0.9",
                        help="noise levels as fractions of the schedule's steps")
    parser.add_argument("--draws", type=int, default=4)
    args = parser.parse_args()
    names = sorted(p.stem for p in args.clips.glob("*.mp4"))
    rows = ["| system | level (t / T) | alpha-bar | audio x0 MSE own | audio, other's video | audio ratio "
            "| video x0 MSE own | video, other's audio | video ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for label, run in (s.split("=", 1) for s in args.systems):
        pipe = Pipeline.from_checkpoint(run)
        clips = read_clips(args.clips, names, pipe.fps, pipe.sample_rate, pipe.size)
        video0 = pipe.encode_video(clips.frames)
        audio0 = pipe.encode_audio(clips.waves)[..., :pipe.audio_length_for(video0.shape[1])]
        steps = pipe.schedule.num_steps
        for frac in (float(x) for x in args.levels.split(",")):
            level = int(round(frac * (steps - 1)))
            r = reliance(pipe.model, pipe.schedule, pipe.config.diffusion.loss.prediction, video0, audio0, level,
                         args.draws)
            rows.append(f"| {label} | {frac:.2f} | {r['alpha_bar']:.3g} | {r['audio_own']:.4g} | {r['audio_other']:.4g} | "
                        f"{r['audio_ratio']:.3f} | {r['video_own']:.4g} | {r['video_other']:.4g} | "
                        f"{r['video_ratio']:.3f} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
