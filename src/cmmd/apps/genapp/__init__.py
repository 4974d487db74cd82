"""``cmmd app``: a local web app that samples v->a, a->v and joint clips from a checkpoint.

Starlette (the ``app`` extra, as the MOS app) with one server-rendered page and a few lines of
plain script for progress: nothing is loaded from outside this machine. ``inputs`` checks a
request before it is queued, ``jobs`` runs the queue, ``work`` samples and writes the results,
``server`` holds the routes, ``pages`` the page.
"""
