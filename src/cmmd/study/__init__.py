"""Comparative studies on the synthetic benchmark (``cmmd study``): several systems trained on the
same training set with the same budget, each evaluated on the same held-out clips for
video->audio and audio->video, with paper-style tables, paired tests and eta / lambda sweeps.

:mod:`cmmd.study.config` reads and checks a study config, :mod:`cmmd.study.tasks` holds the
training, generation and evaluation tasks and their scheduler, :mod:`cmmd.study.run` runs a
study into its output folder, :mod:`cmmd.study.tables` and :mod:`cmmd.study.report` make the
tables, ``study.md`` and ``study.json``. docs/STUDY.md describes the configs and their cost.
"""

from cmmd.study.config import StudyConfig, load_study_config
from cmmd.study.run import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
