"""The ``bioprior`` command line (typer + rich): ``app`` holds the typer app, its global options
and ``main``; the commands by group in ``plugins``, ``score``, ``results``, ``data`` and
``report``, each registering on the one app; ``common`` what they share, ``plain_help`` the help
format, ``preview`` the stimulus grids.

May import: every layer below, and ``report``.
"""
