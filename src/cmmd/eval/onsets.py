"""Onsets of any audio, for the onset-F1 metric of ``cmmd evaluate`` (real media: no sidecar,
no known events).

One detector reads both sides of a pair (generated and reference audio), so whatever it gets
wrong it gets wrong on both: librosa's onset detector, the one the video-to-audio literature's
onset metrics use, on the project's log-mel front-end (:func:`cmmd.eval.sync.audio.as_log_mel`):

* strength: :func:`librosa.onset.onset_strength` of the log-mel in dB (mean over mel bins of
  the positive one-frame rise, ``lag=1``), ``center=False``: our frame ``l`` is already centred
  on sample ``l * HOP``, and the rise into frame ``l`` is placed at frame ``l``. librosa's
  ``center=True`` would shift it ``n_fft // (2 * hop)`` frames later (64 ms with its default
  ``n_fft=2048`` when given a spectrogram). On a click track the detected times lie 0-16 ms
  before the clicks (one frame is 16 ms), see tests/test_eval_onset.py.
* the first ``EDGE_FRAMES`` frames of the strength are zeroed: the first log-mel frame is half
  zero padding, so the rise out of it is an artefact of the clip's start, not an onset.
* peaks: :func:`librosa.onset.onset_detect` with its defaults (strength normalised to [0, 1],
  local maximum over 30 ms, above the 100 ms-window mean by 0.07, 30 ms apart) and
  ``backtrack=False`` (times are the peaks of the rise, not the quiet point before it).

Why not :func:`cmmd.eval.sync.audio.detect_audio_events`: its thresholds are tuned on the
synthetic benchmark's tones. Why not :func:`cmmd.eval.sync.audio.magnitude_flux`: it is
dominated by the loudest onsets (what the beat tracker wants) and misses quiet ones. The dB
flux is gain-invariant; the price is that steady noise, normalised, also gives many onsets, on
both sides alike, which the shuffled-pairs baseline of the metric accounts for. Digital silence
gives none. Deterministic: no randomness, no state.
"""

from __future__ import annotations

import librosa
import numpy as np

from cmmd.conventions import HOP, SAMPLE_RATE
from cmmd.eval.sync.audio import as_log_mel

LAG = 1  # frames between the two log-mel frames whose difference is the rise
EDGE_FRAMES = LAG + 1  # strength frames that compare against the half-padded first frame
DB_PER_NEPER = 20.0 / np.log(10.0)  # natural-log magnitude -> dB

# Identifies the detector in cache keys: change it when the detector changes.
DETECTOR = "librosa-onset-detect-db-mel-lag1-uncentred-edge2"


def onset_strength(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Onset strength ``(L,)`` of a waveform ``(S,)`` or log-mel ``(N_MELS, L)``, in dB of mean
    rise per frame, at ``sample_rate / HOP`` frames/s, the first ``EDGE_FRAMES`` set to 0."""
    mel = as_log_mel(audio, sample_rate, "onset_strength")
    env = librosa.onset.onset_strength(S=DB_PER_NEPER * mel, sr=sample_rate, hop_length=HOP, lag=LAG,
                                       center=False)
    env[:EDGE_FRAMES] = 0.0
    return env


def detect_onsets(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Onset times ``(K,)`` in seconds, ascending, of a waveform ``(S,)`` or log-mel ``(N_MELS, L)``
    (module docstring); none for silence."""
    env = onset_strength(audio, sample_rate)
    times = librosa.onset.onset_detect(onset_envelope=env, sr=sample_rate, hop_length=HOP, backtrack=False,
                                       units="time")
    return np.asarray(times, dtype=np.float64)
