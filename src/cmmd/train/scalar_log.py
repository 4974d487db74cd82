"""Scalar logs for a training run: a CSV always, TensorBoard when the package is installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class ScalarLog:
    """Append-only CSV of ``step`` + scalars (columns fixed by the first row), mirrored to
    TensorBoard if ``tensorboard`` is importable. Resumed runs append to the same files."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "log.csv"
        self._fields: list[str] | None = None
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open() as f:
                self._fields = next(csv.reader(f))
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self._tb = None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, math.nan) for k in self._fields])
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(run_dir: Path) -> list[dict[str, float]]:
    """Rows of a run's ``log.csv`` as floats."""
    with (run_dir / "log.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
