"""Submissions: the YAML schema (``schema``), loading and validation against the registry
(``loading``), the files a submission names, checked by content (``files``), and the paper's
published numbers beside the measured ones (``reference``: matching, statistics, verdict).

May import: ``base``, ``hooks``.
"""
