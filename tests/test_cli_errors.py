"""Bad command lines, across the verbs: each exits non-zero with one line ``cmmd VERB...: error: ...``
on stderr, before any work, and never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmmd.assets import DEMO_CHECKPOINT
from cmmd.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO = str(CONFIGS / "demo_tiny.yaml")

# (verb prefix of the error line, argv with {tmp} for a scratch folder, {media} for a folder of one clip,
#  {empty} for an empty folder, {ckpts} for junk and truncated checkpoint files, a piece of the message)
BAD_COMMAND_LINES = [
    ("cmmd synth", ["synth", "{tmp}/s", "--n", "-3"], "-3"),
    ("cmmd synth", ["synth", "{tmp}/s", "--size", "63"], "even"),
    ("cmmd synth", ["synth", "{tmp}/s", "--scene", "waves"], "invalid choice"),
    ("cmmd synth", ["synth", "{tmp}/s", "--duration", "0"], "duration"),
    ("cmmd synth", ["synth", "{tmp}/s", "--workers", "0"], "workers"),
    ("cmmd prepare", ["prepare", "{tmp}/nowhere", "{tmp}/out"], "does not exist"),
    ("cmmd prepare", ["prepare", "{media}", "{media}/shards"], "inside the source"),
    ("cmmd prepare", ["prepare", "{media}", "{tmp}/out", "--size", "0"], "size"),
    ("cmmd prepare", ["prepare", "{media}", "{tmp}/out", "--workers", "0"], "workers"),
    ("cmmd prepare", ["prepare", "{media}", "{tmp}/out", "--clip-seconds", "-1"], "clip"),
    ("cmmd prepare", ["prepare", "{empty}", "{tmp}/out"], "no video files"),
    ("cmmd train", ["train", DEMO, "nosuch=1"], "nosuch"),
    ("cmmd train", ["train", "{tmp}/missing.yaml"], "missing.yaml"),
    ("cmmd train", ["train", DEMO, "optim.lr=fast"], "optim.lr"),
    ("cmmd train", ["train", DEMO, "steps=ten"], "steps"),
    ("cmmd generate", ["generate", "{tmp}/ckpt", "{media}", "--mode", "v2a", "--steps", "0"], "--steps"),
    ("cmmd generate", ["generate", "{tmp}/ckpt", "--mode", "sideways"], "invalid choice"),
    ("cmmd generate", ["generate", "{ckpts}/junk.safetensors", "{media}", "--mode", "v2a"], "junk.safetensors"),
    ("cmmd generate", ["generate", "{ckpts}/cut.safetensors", "{media}", "--mode", "v2a"], "cut.safetensors"),
    ("cmmd evaluate", ["evaluate", "{tmp}/nowhere", "{media}"], "does not exist"),
    ("cmmd evaluate", ["evaluate", "{empty}", "{media}"], "no media files"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--boot", "-1"], "boot"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--metrics", "fvd,bleu"], "bleu"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--fps", "fast"], "invalid float"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--fvd-frames", "0"], "fvd"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--sample-rate", "0"], "--sample-rate"),
    ("cmmd evaluate", ["evaluate", "{media}", "{media}", "--out", "{media}/clip.mp4"], "--out"),
    ("cmmd vae", ["vae", "train", "{tmp}/nowhere", "--out", "{tmp}/run"], "nowhere"),
    ("cmmd vae", ["vae", "train", "{media}", "--out", "{tmp}/run", "--steps", "-1"], "steps"),
    ("cmmd vae", ["vae", "test", "{tmp}/nowhere", "--codec", "pixel"], "nowhere"),
    ("cmmd vae", ["vae", "test", "{media}", "--codec", "pixel", "--frames", "0"], "--frames"),
    ("cmmd vocoder", ["vocoder", "train", "{tmp}/nowhere", "--out", "{tmp}/run"], "nowhere"),
    ("cmmd vocoder", ["vocoder", "train", "{media}", "--out", "{tmp}/run", "--batch-size", "0"], "batch size"),
    ("cmmd vocoder", ["vocoder", "train", "{media}", "--out", "{media}/run"], "inside"),
    ("cmmd vocoder", ["vocoder", "test", "{media}/clip.mp4", "--vocoder", "griffinlim", "--seconds", "-1"],
     "--seconds"),
    ("cmmd vocoder", ["vocoder", "test", "{tmp}/none.wav", "--vocoder", "griffinlim"], "none.wav"),
    ("cmmd compare", ["compare", "{tmp}/a", "{tmp}/b"], "cannot read an evaluation result"),
    ("cmmd demo", ["demo", "--clips", "0", "--out", "{tmp}/demo"], "--clips"),
    ("cmmd demo", ["demo", "--steps", "0", "--out", "{tmp}/demo"], "--steps"),
    ("cmmd demo", ["demo", "--minutes", "-2", "--train", "--out", "{tmp}/demo"], "--minutes"),
    ("cmmd study", [
        "study", str(CONFIGS / "study_cpu.yaml"), "--lambda-sweep", "a,b", "--out", "{tmp}/st"], "--lambda-sweep"),
    ("cmmd study", ["study", str(CONFIGS / "study_cpu.yaml"), "bogus.key=1", "--out", "{tmp}/st"], "bogus"),
    ("cmmd fetch-weights", ["fetch-weights", "resnet"], "resnet"),
    ("cmmd mos", ["mos", "serve", "{tmp}/study", "--port", "70000"], "--port"),
    ("cmmd mos", ["mos", "create", "{tmp}/study", "--systems", "gt={media}", "--questions", "v2a-sound",
                  "--attention-checks", "-1"], "--attention-checks"),
    ("cmmd mos", ["mos", "analyze", "{tmp}/nowhere"], "nowhere"),
    ("cmmd", ["frobnicate"], "invalid choice"),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, noise_clip) -> dict[str, Path]:
    from cmmd.data.media import write_media

    root = tmp_path_factory.mktemp("cli_errors")
    (root / "media").mkdir()
    (root / "empty").mkdir()
    frames, audio = noise_clip(1.0)
    write_media(root / "media" / "clip.mp4", frames, audio, 10, 16000)
    (root / "ckpts").mkdir()
    (root / "ckpts" / "junk.safetensors").write_bytes(b"junk")
    (root / "ckpts" / "cut.safetensors").write_bytes(DEMO_CHECKPOINT.read_bytes()[:5000])  # a real one cut short
    return {"media": root / "media", "empty": root / "empty", "ckpts": root / "ckpts"}


@pytest.mark.parametrize(("prefix", "argv", "fragment"), BAD_COMMAND_LINES,
                         ids=[" ".join(a[:3]) + f"#{i}" for i, (_, a, _) in enumerate(BAD_COMMAND_LINES)])
def test_a_bad_command_line_is_one_line_error(prefix: str, argv: list[str], fragment: str, folders: dict[str, Path],
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(tmp=tmp_path, **folders) for a in argv]
    before = sorted(folders["media"].rglob("*"))
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{prefix}") and ": error: " in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert sorted(folders["media"].rglob("*")) == before  # nothing written into the inputs
