"""Comparative studies on the synthetic benchmark (``cmmd study``): several systems trained on the
same training set with the same budget, each evaluated on the same held-out clips for
video->audio and audio->video, with paper-style tables, paired tests and eta / lambda sweeps.

:mod:`cmmd.apps.study.config` reads and checks a study config, :mod:`cmmd.apps.study.tasks` holds the
training, generation and evaluation tasks and their scheduler, :mod:`cmmd.apps.study.run` runs a
study into its output folder, :mod:`cmmd.apps.study.tables` and :mod:`cmmd.apps.study.report` make the
tables, ``study.md`` and ``study.json``. docs/STUDY.md describes the configs and their cost.
"""

from cmmd.apps.study.config import StudyConfig, load_study_config
from cmmd.apps.study.run import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
