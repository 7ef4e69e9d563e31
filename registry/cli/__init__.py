"""The ``bioprior`` command line (typer + rich): ``app`` holds the commands, ``plain_help`` the
help format, ``preview`` the stimulus grids.

May import: every layer below, and ``report``.
"""
