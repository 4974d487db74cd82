"""Server-rendered HTML of the rating app, plus its stylesheet and script (no external assets).

Every value that reaches a page goes through ``html.escape``. Pages carry item ids only: no
system names, clip names or file paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from cmmd.apps.mos.questions import SCALE_LABELS, SCALE_MAX, SCALE_MIN, Question

CSS = """
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 1.5rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.4rem; }
video { width: 100%; max-height: 60vh; background: #000; }
fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 0.8rem 0; }
legend { font-weight: 600; }
.scale { display: flex; gap: 0.4rem; flex-wrap: wrap; }
.scale label { flex: 1; min-width: 5rem; text-align: center; border: 1px solid #bbb; border-radius: 4px;
               padding: 0.3rem; cursor: pointer; }
.scale input { display: block; margin: 0 auto 0.2rem; }
button { font-size: 1rem; padding: 0.5rem 1.2rem; }
button:disabled { opacity: 0.5; }
progress { width: 100%; }
.hint { color: #555; }
.error { color: #a40000; font-weight: 600; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
code { word-break: break-all; }
"""

# Submit becomes possible once the clip has played to its end (ITU-T P.800 practice: rate what
# you have heard in full); without JavaScript the button simply stays enabled.
JS = """
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var video = document.getElementById("clip");
  var form = document.getElementById("rating-form");
  var submit = document.getElementById("submit");
  var hint = document.getElementById("play-hint");
  if (!video || !form || !submit) { return; }
  submit.disabled = true;
  video.addEventListener("ended", function () {
    submit.disabled = false;
    hint.textContent = "Thank you. Replay the clip if you like, then answer every question.";
  });
  video.addEventListener("error", function () {
    hint.textContent = "This clip cannot be played in your browser. Please tell the study organiser.";
    hint.className = "error";
  });
  form.addEventListener("submit", function () { submit.disabled = true; });
});
"""


@dataclass(frozen=True)
class AdminRow:
    """One rater's line in the admin view."""

    rater_id: str
    anonymous: bool
    rated: int
    total: int
    attention: str
    started: str
    last: str
    resume_url: str


def _layout(title: str, body: str, script: bool = False) -> str:
    """A complete page around ``body`` (already escaped HTML)."""
    js = '<script src="/static/mos.js"></script>' if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/mos.css">{js}</head>'
            f"<body>{body}</body></html>\n")


def _instructions(questions: Sequence[Question], n_items: int | None) -> str:
    """What the rater is asked to do, with every question's prompt."""
    count = f"{n_items} short clips" if n_items is not None else "a series of short clips"
    listing = "".join(f"<li><b>{escape(q.label)}</b>: {escape(q.prompt)}</li>" for q in questions)
    return (f"<p>You will see {count}, one at a time. Please use headphones in a quiet room and set a "
            f"comfortable volume before you start. Play each clip to the end (you may replay it), then "
            f"answer each question on a scale from {SCALE_MIN} ({SCALE_LABELS[SCALE_MIN]}) to {SCALE_MAX} "
            f"({SCALE_LABELS[SCALE_MAX]}). There are no right or wrong answers: give your own impression.</p>"
            f"<ul>{listing}</ul>"
            "<p>Each rating is saved as soon as you submit it, and cannot be changed afterwards. You can stop "
            "at any time and come back later with your personal link.</p>")


def welcome_page(questions: Sequence[Question], error: str | None = None) -> str:
    """Instructions and the form that starts a session."""
    err = f'<p class="error">{escape(error)}</p>' if error else ""
    body = (f"<h1>Listening and viewing test</h1>{_instructions(questions, None)}{err}"
            '<form method="post" action="/start">'
            '<p><label>Rater id (optional): <input name="rater" maxlength="64" autocomplete="off" '
            'pattern="[A-Za-z0-9_.\\-]{1,64}" title="letters, digits, _ . -"></label></p>'
            '<p class="hint">Leave it empty to get an anonymous id.</p>'
            '<button type="submit" id="start">Start</button></form>')
    return _layout("Listening and viewing test", body)


def rating_page(questions: Sequence[Question], rater_id: str, session: str, item_id: str, done: int,
                total: int, resume_url: str) -> str:
    """One clip with its questions as 1-5 scales, the progress and the personal link."""
    fieldsets = []
    for q in questions:
        options = "".join(
            f'<label><input type="radio" name="{escape(q.id)}" value="{v}" required>{v}<br>'
            f"<small>{escape(SCALE_LABELS[v])}</small></label>"
            for v in range(SCALE_MIN, SCALE_MAX + 1)
        )
        fieldsets.append(f"<fieldset><legend>{escape(q.label)}</legend><p>{escape(q.prompt)}</p>"
                         f'<div class="scale">{options}</div></fieldset>')
    body = (f'<p id="progress-text">Clip {done + 1} of {total} ({done} rated)</p>'
            f'<progress id="progress" value="{done}" max="{total}"></progress>'
            f"<details><summary>Instructions</summary>{_instructions(questions, total)}</details>"
            f'<video id="clip" controls preload="auto" playsinline controlslist="nodownload" '
            f'src="/s/{escape(session)}/media/{escape(item_id)}"></video>'
            '<p id="play-hint" class="hint">Play the clip to the end with sound before rating.</p>'
            f'<form id="rating-form" method="post" action="/s/{escape(session)}/rate">'
            f'<input type="hidden" name="item" value="{escape(item_id)}">{"".join(fieldsets)}'
            '<button type="submit" id="submit">Submit and continue</button></form>'
            f'<p class="hint">Rating as <b>{escape(rater_id)}</b>. Your personal link to continue later: '
            f'<a href="{escape(resume_url)}"><code>{escape(resume_url)}</code></a></p>')
    return _layout(f"Clip {done + 1} of {total}", body, script=True)


def finished_page(rater_id: str, total: int) -> str:
    """Shown once every assigned item is rated."""
    body = (f"<h1>Thank you!</h1><p id=\"progress-text\">You have rated all {total} clips ({total} of {total}). "
            f"Your ratings are saved under <b>{escape(rater_id)}</b>; you can close this page.</p>")
    return _layout("Thank you", body)


def message_page(title: str, text: str, link: tuple[str, str] | None = None) -> str:
    """A short page for errors and notices, with an optional ``(href, label)`` link."""
    more = f'<p><a href="{escape(link[0])}">{escape(link[1])}</a></p>' if link else ""
    return _layout(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{more}")


def admin_page(rows: Sequence[AdminRow], n_ratings: int, attention_note: str) -> str:
    """Progress per rater (the organiser's view)."""
    head = "".join(f"<th>{h}</th>" for h in
                   ("rater", "anonymous", "rated", "of", "attention checks failed", "started", "last rating",
                    "personal link"))
    lines = "".join(
        f"<tr><td>{escape(r.rater_id)}</td><td>{'yes' if r.anonymous else 'no'}</td><td>{r.rated}</td>"
        f"<td>{r.total}</td><td>{escape(r.attention)}</td><td>{escape(r.started)}</td><td>{escape(r.last)}</td>"
        f'<td><code>{escape(r.resume_url)}</code></td></tr>'
        for r in rows
    )
    complete = sum(r.rated >= r.total for r in rows)
    body = (f"<h1>Study progress</h1><p>{len(rows)} rater(s), {complete} finished, {n_ratings} item rating(s) "
            f"stored. {escape(attention_note)}</p><table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody>"
            "</table><p class=\"hint\">Reload to refresh. Analyse with <code>cmmd mos analyze STUDY_DIR</code>.</p>")
    return _layout("Study progress", body)
