"""cmmd.eval.pairing: generated and reference files pair by name (stem), K generations per condition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmmd.errors import CmmdError
from cmmd.eval.pairing import is_audio_only, pair_folders


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_plain_and_numbered_generations_pair_by_stem(tmp_path: Path) -> None:
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    touch(ref, "b.mp4", "a.mp4", "notes.txt")
    touch(gen, "a__g10.wav", "a__g2.wav", "b__g1.mp4", "b__g3.mp4")
    pairing = pair_folders(gen, ref)
    assert pairing.names == ("a", "b")  # sorted; non-media files ignored
    assert pairing.generations == 2
    assert [p.name for p in pairing.generated["a"]] == ["a__g2.wav", "a__g10.wav"]  # by k, not by text
    assert pairing.reference["b"].name == "b.mp4"
    assert [p.name for p in pairing.paths()] == ["a.mp4", "a__g2.wav", "a__g10.wav", "b.mp4", "b__g1.mp4", "b__g3.mp4"]
    assert is_audio_only(pairing.generated["a"][0]) and not is_audio_only(pairing.reference["a"])
    one = tmp_path / "one"
    touch(one, "a.wav", "b.webm")
    assert pair_folders(one, ref).generations == 1


def test_sidecars_with_events_come_along(tmp_path: Path) -> None:
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    touch(ref, "a.mp4", "b.mp4", "c.mp4")
    touch(gen, "a.mp4", "b.mp4", "c.mp4")
    (ref / "a.json").write_text(json.dumps({"scene": "impacts", "events": []}))
    (ref / "b.json").write_text(json.dumps({"title": "not a sidecar"}))
    assert set(pair_folders(gen, ref).sidecars) == {"a"}
    (ref / "c.json").write_text("{broken")
    with pytest.raises(CmmdError, match=r"c\.json: not a readable JSON sidecar"):
        pair_folders(gen, ref)


def test_pairing_refuses_ambiguous_or_uneven_folders(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    touch(ref, "a.mp4", "b.mp4")
    mixed = tmp_path / "mixed"
    touch(mixed, "a.mp4", "a__g1.mp4", "b.mp4")
    with pytest.raises(CmmdError, match="both <name> and <name>__g<k> files for: a"):
        pair_folders(mixed, ref)
    twice = tmp_path / "twice"
    touch(twice, "a.mp4", "a.wav", "b.mp4")
    with pytest.raises(CmmdError, match="two files named 'a'"):
        pair_folders(twice, ref)
    uneven = tmp_path / "uneven"
    touch(uneven, "a__g1.mp4", "a__g2.mp4", "b__g1.mp4")
    with pytest.raises(CmmdError, match=r"every condition needs 2 generation\(s\).*b \(1\)"):
        pair_folders(uneven, ref)
    with pytest.raises(CmmdError, match="does not exist"):
        pair_folders(tmp_path / "missing", ref)
