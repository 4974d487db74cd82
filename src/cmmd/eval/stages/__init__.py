"""The metric stages of :func:`cmmd.eval.evaluate.evaluate`, one module per metric family.

Each stage takes the :class:`~cmmd.eval.pairing.Pairing`, the
:class:`~cmmd.eval.inputs.MediaFiles` reader and the feature cache, and returns metric entries
(:mod:`cmmd.eval.entries`) by key: :mod:`.fvd_kvd`, :mod:`.fad`, :mod:`.beat`, :mod:`.onset`,
:mod:`.sync`, :mod:`.offset`; :mod:`.shuffled` pairs generations with shuffled references for the baselines. The algorithms they apply live in the modules of :mod:`cmmd.eval`.
"""
