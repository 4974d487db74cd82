"""Sampling from a trained checkpoint: the pipeline, `cmmd generate`, and the demo's page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmmd.cli import main
from cmmd.data.media import read_media, write_media
from cmmd.data.synth import render_clip
from cmmd.errors import CmmdError
from cmmd.pipeline import Pipeline, SamplingSettings


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An impacts clip as mp4 (video + audio), video-only mp4 and audio-only mkv, 3.2 s at 24 px."""
    d = tmp_path_factory.mktemp("clips")
    clip = render_clip("impacts", seed=123, duration=3.2, size=24)
    write_media(d / "both.mp4", clip.frames, clip.audio, 10, 16000)
    write_media(d / "video_only.mp4", clip.frames, None, 10, 16000)
    write_media(d / "audio_only.mkv", None, clip.audio, 10, 16000)
    return {"both": d / "both.mp4", "video": d / "video_only.mp4", "audio": d / "audio_only.mkv"}


def test_pipeline_modes_shapes_and_seed_determinism(micro_run: Path) -> None:
    pipe = Pipeline.from_checkpoint(micro_run)
    clip = render_clip("impacts", seed=7, duration=1.7, size=16)  # odd length: 17 frames, 27200 samples
    s = SamplingSettings(steps=4, seed=3)
    v2a = pipe.generate("v2a", s, frames=clip.frames[None])
    assert v2a.mel.shape == (1, 80, 27200 // 256) and v2a.wave.shape == (1, (27200 // 256) * 256)
    np.testing.assert_array_equal(v2a.frames[0], clip.frames)  # the condition comes back exactly
    again = pipe.generate("v2a", s, frames=clip.frames[None])
    np.testing.assert_array_equal(again.mel, v2a.mel)
    other = pipe.generate("v2a", SamplingSettings(steps=4, seed=4), frames=clip.frames[None])
    assert not np.array_equal(other.mel, v2a.mel)
    a2v = pipe.generate("a2v", SamplingSettings(steps=4, method="dpmpp2m", guidance_scale=0.5),
                        wave=clip.audio[None])
    assert a2v.frames.shape == (1, 17, 16, 16, 3) and a2v.frames.dtype == np.uint8
    joint = pipe.generate("joint", s, num_frames=36, batch=2)  # twice the training length
    assert joint.frames.shape == (2, 36, 16, 16, 3) and joint.mel.shape == (2, 80, 225)


def test_pipeline_rejects_wrong_size_frames(micro_run: Path) -> None:
    pipe = Pipeline.from_checkpoint(micro_run)
    frames = np.zeros((1, 8, 24, 24, 3), np.uint8)
    with pytest.raises(CmmdError, match="24x24 but the model was trained on 16x16"):
        pipe.generate("v2a", SamplingSettings(steps=2), frames=frames)


def test_generate_cli_v2a_a2v_joint(micro_run: Path, clip_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(clip_files["both"]), "--mode", "v2a", "--steps", "3",
                 "--out", str(out)]) == 0
    media = read_media(out / "both.mp4")
    assert media.frames.shape == (32, 16, 16, 3) and abs(len(media.audio) - 51200) <= 256
    settings = json.loads((out / "both.json").read_text())
    assert settings["mode"] == "v2a" and settings["steps"] == 3 and (out / "both_spec.png").is_file()
    assert (out / "both_condition.mp4").is_file()
    # The same name again is refused without --overwrite: nothing is silently replaced.
    assert main(["generate", str(micro_run), str(clip_files["both"]), "--mode", "v2a", "--steps", "3",
                 "--out", str(out)]) == 2
    assert main(["generate", str(micro_run), str(clip_files["audio"]), "--mode", "a2v", "--steps", "3",
                 "--method", "dpmpp2m", "--out", str(out)]) == 0
    assert read_media(out / "audio_only.mp4").frames.shape == (32, 16, 16, 3)
    assert main(["generate", str(micro_run), "--mode", "joint", "--num", "2", "--seconds", "1.6",
                 "--steps", "3", "--out", str(out)]) == 0
    assert read_media(out / "joint_0001.mp4").frames.shape == (16, 16, 16, 3)


def test_generate_cli_rejects_wrong_modality(micro_run: Path, clip_files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(micro_run), str(clip_files["audio"]), "--mode", "v2a",
                 "--out", str(tmp_path)]) == 2
    assert "audio_only.mkv" in capsys.readouterr().err
    assert main(["generate", str(micro_run), str(clip_files["video"]), "--mode", "a2v",
                 "--out", str(tmp_path)]) == 2
    assert "video_only.mp4" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing"), "--mode", "joint"]) == 2
