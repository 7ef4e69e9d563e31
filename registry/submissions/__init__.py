"""Submissions: the YAML schema (``schema``), loading and validation against the registry
(``loading``), and the files a submission names, checked by content (``files``).

May import: ``base``, ``hooks``.
"""
