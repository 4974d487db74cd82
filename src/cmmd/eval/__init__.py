"""eval stage of cmmd: metrics and the statistics to report them (METHOD.md sections 6 and 7).

* ``cmmd.eval.evaluate``: ``cmmd evaluate`` in one pass (:func:`~cmmd.eval.evaluate.evaluate`),
  over :mod:`cmmd.eval.pairing`, :mod:`cmmd.eval.settings`, :mod:`cmmd.eval.inputs`,
  :mod:`cmmd.eval.cache`, :mod:`cmmd.eval.entries` and one stage per metric in
  :mod:`cmmd.eval.stages`.
* Algorithms: ``i3d``, ``distances`` (FVD/KVD), ``embedders`` and ``fad`` (FAD), ``beats`` (the
  paper's beat hit rate, tuned for 3.6 s clips), ``sync`` (model-free audio-visual sync on the
  synthetic impacts scene: event detection in audio, log-mels and video; event F1, class
  accuracy, AV offset, the shuffled-pairs baseline, the held-out score table).
* ``cmmd.eval.stats``: bootstrap confidence intervals, paired Wilcoxon tests, Holm/Bonferroni.
* ``cmmd.eval.report``, ``cmmd.eval.plots``, ``cmmd.eval.provenance``: what is written out.

Submodules are imported explicitly (``from cmmd.eval.sync import score``) so that importing the
package does not pull in librosa.
"""
