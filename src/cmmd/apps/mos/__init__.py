"""Listening and viewing tests (MOS studies, paper section 3.3): build a study from folders of
generated clips (``study``), rate it in a browser (``app``, needs the ``mos`` extra), store
ratings in SQLite (``db``) and analyse them (``analyze``). See docs/MOS.md."""
