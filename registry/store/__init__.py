"""The store: results in SQLite (``results``), claims so that scorers sharing a database do
each step once (``claims``), and trained weights on disk and in transit (``weights``).

May import: ``base``, ``hooks``, ``submissions``, ``planning``.
"""
