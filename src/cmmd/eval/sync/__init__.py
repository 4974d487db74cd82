"""Model-free audio-visual synchronisation metrics on the synthetic benchmark (METHOD.md section 7).

The *impacts* scene has exact ground truth: at each event an object (a coloured disc) touches the
floor and flashes, and a percussive tone at its class pitch starts (docs/CONTRACTS.md). The
modules of this package detect those events in generated media and score them against the JSON
sidecar:

* :mod:`.audio`: :func:`~.audio.detect_audio_events` (waveform) and
  :func:`~.audio.detect_audio_events_mel` (a log-mel, e.g. straight from the model, so the score
  does not depend on the vocoder); onsets from an energy-weighted log-spectral flux, the class
  from the pitch of the energy that appears in the ~100 ms after the onset.
* :mod:`.video`: :func:`~.video.detect_video_events` segments each class colour by hue (robust to
  blur, the flash and 16 px frames), tracks its vertical centroid and reports floor contacts.
* :mod:`.score`: optimal one-to-one matching within a tolerance, precision/recall/F1, the scores
  of one generated clip and the shuffled-ground-truth chance level.
* :mod:`.offset`: the audio-video lag of any clip from the cross-correlation of the audio onset
  envelope with the visual motion energy.
* :mod:`.heldout`: the v->a / a->v score table of a model on a set of held-out clips
  (:func:`~.heldout.score_heldout`; demo, benchmarks).

Submodules are imported explicitly (``from cmmd.eval.sync.score import event_sync_metrics``).
"""
