"""eval stage of cmmd: metrics and the statistics to report them (METHOD.md sections 6 and 7).

* ``cmmd.eval.sync``: model-free audio-visual sync metrics on the synthetic impacts scene
  (event detection in audio, log-mels and video; event F1, class accuracy, AV offset, the
  shuffled-pairs baseline).
* ``cmmd.eval.beats``: the paper's beat-tracking hit rate, tuned for 3.6 s clips.
* ``cmmd.eval.stats``: bootstrap confidence intervals, paired Wilcoxon tests, Holm/Bonferroni.

Submodules are imported explicitly (``from cmmd.eval import sync``) so that importing the
package does not pull in librosa.
"""
