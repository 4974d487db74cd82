"""The app's one page, its stylesheet and its script (no external assets, no framework).

The form posts to ``/api/generate`` and so works without script (the answer is the mp4); the
script instead posts it to ``/api/jobs`` and polls the job for its queue position, step and
elapsed time, then shows each result. Every value that reaches the page goes through
``html.escape``; the script only sets ``textContent`` and attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from cmmd.apps.genapp.inputs import MAX_VARIATIONS, MODES


@dataclass
class PageInfo:
    """What the page shows and offers: the model, its choices and limits."""

    checkpoint: str
    version: str
    step: int
    samplers: list[str]
    vocoders: list[str]
    max_steps: int
    train_seconds: float
    max_seconds: float
    max_upload_mb: float


CSS = """
body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 1.5rem auto; padding: 0 1rem;
       color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
fieldset { border: 1px solid #ccc; border-radius: 6px; margin: 0.8rem 0; }
legend { font-weight: 600; }
label { display: inline-block; margin: 0.25rem 1rem 0.25rem 0; }
input[type=number] { width: 6rem; }
button { font-size: 1rem; padding: 0.5rem 1.2rem; }
button:disabled { opacity: 0.5; }
video { width: 100%; max-height: 24rem; background: #000; }
img { width: 100%; }
figure { border-top: 1px solid #ddd; margin: 1rem 0; padding-top: 0.6rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
td { border: 1px solid #ddd; padding: 0.1rem 0.5rem; }
.hint { color: #555; font-size: 0.9rem; }
#status { font-weight: 600; min-height: 1.5rem; }
"""

JS = """
"use strict";
const form = document.getElementById("gen-form");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const button = document.getElementById("generate");

function showFields() {
  const mode = form.elements.mode.value;
  document.getElementById("file-field").hidden = mode === "joint";
  document.getElementById("seconds-field").hidden = mode !== "joint";
}
form.elements.mode.addEventListener("change", showFields);
showFields();

function describe(job) {
  const t = job.elapsed.toFixed(1);
  if (job.state === "queued") return "Queued: position " + job.position + " in line";
  if (job.state === "running") {
    const variation = job.variations > 1 ? "variation " + job.variation + " of " + job.variations + ", " : "";
    return "Sampling: " + variation + "step " + job.step + " of " + job.steps + ", " + t + " s elapsed";
  }
  return "Done in " + t + " s";
}

function cell(row, text) { row.insertCell().textContent = text; }

function show(job) {
  job.results.forEach((result, k) => {
    const base = "/api/jobs/" + job.id + "/files/";
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.controls = true;
    video.className = "result-video";
    video.src = base + result.video;
    const spectrogram = document.createElement("img");
    spectrogram.src = base + result.spectrogram;
    spectrogram.alt = "spectrograms of variation " + (k + 1);
    const link = document.createElement("a");
    link.href = base + result.video;
    link.download = "cmmd_" + result.settings.mode + "_seed" + result.settings.seed + ".mp4";
    link.textContent = "Download mp4";
    const table = document.createElement("table");
    for (const [key, value] of Object.entries(result.settings)) {
      const row = table.insertRow();
      cell(row, key);
      cell(row, value === null ? "-" : String(value));
    }
    figure.append(video, spectrogram, link, table);
    results.append(figure);
  });
}

async function follow(url) {
  for (;;) {
    const answer = await fetch(url);
    const job = await answer.json();
    if (!answer.ok) throw new Error(job.error);
    if (job.state === "failed") throw new Error(job.error);
    statusLine.textContent = describe(job);
    if (job.state === "done") return job;
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  button.disabled = true;
  results.replaceChildren();
  statusLine.textContent = "Uploading...";
  try {
    const data = new FormData(form);
    if (form.elements.mode.value === "joint") data.delete("file");
    else data.delete("seconds");
    const answer = await fetch("/api/jobs", {method: "POST", body: data});
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.error);
    show(await follow(body.status));
  } catch (error) {
    statusLine.textContent = "Error: " + error.message;
  } finally {
    button.disabled = false;
  }
});
"""


def _options(values: list[str], labels: dict[str, str] | None = None) -> str:
    return "".join(f'<option value="{escape(v)}">{escape((labels or {}).get(v, v))}</option>' for v in values)


def index_page(info: PageInfo) -> str:
    """The generation form, with the loaded model's file name (its full path as a tooltip), training
    step and recorded code version."""
    version = escape(info.version or "not recorded")
    name, path = escape(Path(info.checkpoint).name), escape(info.checkpoint)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cmmd generation app</title><link rel="stylesheet" href="/static/app.css"></head>
<body>
<h1>cmmd: video &harr; audio generation</h1>
<p class="hint">Model <code title="{path}">{name}</code>, step {info.step}, code version <code>{version}</code>.
Runs on this machine; requests are queued and sampled one at a time.</p>
<form id="gen-form" action="/api/generate" method="post" enctype="multipart/form-data">
<fieldset><legend>Mode</legend>
<label>Mode <select name="mode" id="mode">{_options(list(MODES), MODES)}</select></label>
<div id="file-field"><label>Video or audio file
<input type="file" name="file" id="file" accept="video/*,audio/*"></label>
<span class="hint">at most {info.max_upload_mb:g} MB and {info.max_seconds:g} s. Audio -&gt; video
takes an audio file or a video's soundtrack.</span></div>
<div id="seconds-field"><label>Length (s) <input type="number" name="seconds" step="0.1" min="0.2"
max="{info.max_seconds:g}" value="{info.train_seconds:g}"></label></div>
</fieldset>
<fieldset><legend>Sampling</legend>
<label>Sampler <select name="sampler">{_options(info.samplers)}</select></label>
<label>Steps <input type="number" name="steps" min="1" max="{info.max_steps}" value="25"></label>
<label>Guidance &lambda; <input type="number" name="guidance" min="0" step="0.1" value="0"></label>
<label>Seed <input type="number" name="seed" min="0" value="0"></label>
<label>Variations <input type="number" name="variations" min="1" max="{MAX_VARIATIONS}" value="1"></label>
<label>Vocoder <select name="vocoder">{_options(info.vocoders)}</select></label>
</fieldset>
<button type="submit" id="generate">Generate</button>
</form>
<p id="status" role="status"></p>
<div id="results"></div>
<script src="/static/app.js"></script>
</body></html>
"""
