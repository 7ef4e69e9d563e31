"""Scoring: the one sequence that plans and runs submissions (``scorer``), its options
(``options``) and ``--verify`` (``verify``). The CLI and the Python API both call it.

May import: every layer below.
"""
