"""Data stage: synthetic benchmark, media decoding, preparation into shards, clip datasets, negatives.

Tensor conventions for the whole package live in :mod:`cmmd.conventions`.
"""
