"""Scoring: the one sequence that plans and runs submissions, which the CLI and the Python API
both call (``session``: :class:`ScoringSession`, :func:`score_submissions`), the scorer it drives
(``scorer``), the options, checked once (``options``), per-step limits (``limits``), CPU workers
and the plan line's threads (``workers``), the executor chosen from the options (``executors``)
and ``--verify`` (``verify``).

May import: every layer below.
"""
