"""Questions of a MOS study: the paper's presets (section 3.3) and custom ones from YAML.

Every question is answered on the same 1-5 opinion scale (1 = worst, 5 = best). One question
per set may be the *attention* question: attention-check clips (ground-truth video with another
clip's audio) are expected to score low on it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cmmd.errors import CmmdError

SCALE_MIN = 1
SCALE_MAX = 5
SCALE_LABELS: dict[int, str] = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}

_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_QUESTION_KEYS = {"id", "label", "prompt", "attention"}


@dataclass(frozen=True)
class Question:
    """One 1-5 rating scale: ``id`` (form field and column name), ``label`` (short heading,
    also the box-plot panel title) and ``prompt`` (what the rater is asked). ``attention``
    marks the question that attention checks probe."""

    id: str
    label: str
    prompt: str
    attention: bool = False

    def to_json(self) -> dict[str, Any]:
        """Plain dict for study.json."""
        return asdict(self)


_ACOUSTIC = Question(
    "acoustic_quality", "Acoustic quality",
    "How clean and natural does the sound itself sound (noise, distortion, artefacts), whatever it is?",
)
_SYNC_MUSIC = Question(
    "synchronisation", "Synchronisation",
    "How well is the dancer's movement synchronised with the music (beats and accents)?", attention=True,
)
_SYNC_SOUND = Question(
    "synchronisation", "Synchronisation",
    "How well are the sound events synchronised with the events you see?", attention=True,
)

PRESETS: dict[str, tuple[Question, ...]] = {
    "v2a-music": (
        _ACOUSTIC,
        Question("musical_quality", "Musical quality",
                 "How good is the music as music (rhythm, harmony, coherence), ignoring the video?"),
        _SYNC_MUSIC,
    ),
    "v2a-sound": (
        _ACOUSTIC,
        Question("semantic_quality", "Semantic quality",
                 "Do the kinds of sounds you hear make sense for the scene you see? "
                 "Ignore their timing for this question."),
        _SYNC_SOUND,
    ),
    "a2v": (
        Question("video_quality", "Video quality",
                 "How good is the video itself (sharpness, artefacts, plausible motion), ignoring the sound?"),
        Question("temporal_alignment", "Temporal alignment",
                 "How well does the movement in the video follow the timing of the audio?", attention=True),
    ),
}


def load_questions(spec: str) -> tuple[Question, ...]:
    """Questions from a preset name (``v2a-music``, ``v2a-sound``, ``a2v``) or a YAML file.

    The YAML file is a list of questions, or a mapping with a ``questions`` list; each question
    has ``id`` (lower-case letters, digits, underscores), ``label``, ``prompt`` and optionally
    ``attention: true`` (at most one). Unknown keys are errors that name the key.
    """
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise CmmdError(f"--questions {spec!r}: not a preset ({', '.join(PRESETS)}) and no such YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CmmdError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if isinstance(data, dict):
        extra = set(data) - {"questions"}
        if extra:
            raise CmmdError(f"{path}: unknown top-level key(s) {sorted(extra)}; expected only 'questions'")
        data = data.get("questions")
    if not isinstance(data, list) or not data:
        raise CmmdError(f"{path}: expected a non-empty list of questions (or a mapping with a 'questions' list)")
    return questions_from_json(data, str(path))


def questions_from_json(data: list[Any], where: str) -> tuple[Question, ...]:
    """Validate a list of question mappings (from YAML or study.json) into ``Question``s."""
    questions = []
    for index, entry in enumerate(data):
        at = f"{where}: question {index + 1}"
        if not isinstance(entry, dict):
            raise CmmdError(f"{at}: expected a mapping with id, label and prompt, got {entry!r}")
        unknown = set(entry) - _QUESTION_KEYS
        if unknown:
            raise CmmdError(f"{at}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_QUESTION_KEYS)}")
        missing = {"id", "label", "prompt"} - set(entry)
        if missing:
            raise CmmdError(f"{at}: missing key(s) {sorted(missing)}")
        qid, label, prompt = entry["id"], entry["label"], entry["prompt"]
        if not isinstance(qid, str) or not _ID_PATTERN.match(qid):
            raise CmmdError(f"{at}: id {qid!r} must be lower-case letters, digits and '_' (starting with a letter)")
        if not all(isinstance(v, str) and v.strip() for v in (label, prompt)):
            raise CmmdError(f"{at}: label and prompt must be non-empty strings")
        attention = entry.get("attention", False)
        if not isinstance(attention, bool):
            raise CmmdError(f"{at}: attention must be true or false, got {attention!r}")
        questions.append(Question(qid, label.strip(), prompt.strip(), attention))
    ids = [q.id for q in questions]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CmmdError(f"{where}: duplicate question id(s) {duplicates}")
    if sum(q.attention for q in questions) > 1:
        raise CmmdError(f"{where}: at most one question may have attention: true")
    return tuple(questions)


def attention_question(questions: tuple[Question, ...]) -> Question | None:
    """The question that attention checks probe, if the set has one."""
    return next((q for q in questions if q.attention), None)
