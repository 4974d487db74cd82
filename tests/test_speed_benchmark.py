"""The speed benchmark times what training runs: its CMMD rows put their negatives through the network.

Counts, with a hook of the test's own, the batch rows the network sees in one training step of
each benchmark row (``benchmarks/speed_cmmd_vs_mmdiffusion.py``, its own ``Runner.train_step``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
import torch

from cmmd.data.negatives import NegativeConfig
from cmmd.diffusion import DiffusionLossConfig
from conftest import load_benchmark

BATCH = 4


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    yield from load_benchmark("speed_cmmd_vs_mmdiffusion")


def _expected_rows(scheme: Any, batch: int) -> int:
    """Closed form: B positives, plus ceil(f * B) negatives per negative modality drawn."""
    if scheme.contrastive == "none":
        return batch
    per_modality = batch if scheme.fraction >= 1 else math.ceil(scheme.fraction * batch)
    modalities = 2 if scheme.modalities == "both" else 1
    return batch + modalities * per_modality


class Stop(Exception):
    """Raised by the counting hook to end a step after its forward pass is counted."""


@contextmanager
def _count_rows(model: torch.nn.Module, stop: bool = False) -> Iterator[list[int]]:
    """Rows of each forward pass of ``model`` inside the block (the test's own hook, not the benchmark's)."""
    seen: list[int] = []

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(int(args[0].shape[0]))
        if stop:
            raise Stop

    handle = model.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def runners(bench: ModuleType) -> dict[str, Any]:
    """The benchmark's runners of its first ``--quick`` pair (tiny, own inputs), by scheme name."""
    torch.manual_seed(0)
    return {r.scheme.name: r for r in bench.runners(bench.pairs("quick")[0], BATCH)}


EXPECTED = {"nCMMD": 4, "CMMD": 12, "CMMD, negatives on 1/4 of the batch": 6, "CMMD, one modality per step": 8,
            "CMMD, 1/4 of the batch, one modality per step": 5}


def test_benchmark_has_the_schemes(bench: ModuleType, runners: dict[str, Any]) -> None:
    assert list(runners) == [*EXPECTED, "MM-Diffusion"]
    assert {s.name: _expected_rows(s, BATCH) for s in bench.SCHEMES} == EXPECTED


@pytest.mark.parametrize("name", list(EXPECTED))
def test_cmmd_step_puts_its_negatives_through_the_network(runners: dict[str, Any], name: str) -> None:
    runner = runners[name]
    steps = 2 if runner.scheme.modalities == "alternate" else 1  # audio negatives, then video ones
    for _ in range(steps):
        with _count_rows(runner.model) as seen:
            runner.train_step()
        assert seen == [EXPECTED[name]]
        assert runner.rows_per_step == EXPECTED[name]  # what the report prints


def test_mmdiffusion_step_sees_the_batch(runners: dict[str, Any]) -> None:
    runner = runners["MM-Diffusion"]
    with _count_rows(runner.model, stop=True) as seen, pytest.raises(Stop):
        runner.train_step()  # stopped after its forward pass is counted (a full step takes seconds)
    assert seen == [BATCH]


def test_cmmd_row_is_trainings_default_contrastive_step(bench: ModuleType) -> None:
    cmmd = next(s for s in bench.SCHEMES if s.name == "CMMD")
    setup = bench.pairs("quick")[0].cmmd
    assert cmmd.loss_config(setup) == DiffusionLossConfig(contrastive="paper", eta=1e-4)
    assert cmmd.negative_config(BATCH) == NegativeConfig()  # TrainConfig's default negatives
    alternate = next(s for s in bench.SCHEMES if s.modalities == "alternate" and s.fraction == 1)
    assert alternate.negative_config(BATCH) == NegativeConfig(modalities="alternate")
    assert bench.MMDIFFUSION.loss_config(bench.pairs("quick")[0].mmdiffusion) == DiffusionLossConfig(prediction="eps")
