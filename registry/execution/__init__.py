"""Execution: how steps run. In this process (``local``), each in a child process of its own
(``isolated``), or as Ray tasks (``ray_executor``); one scheduler for all (``scheduling``). The
worker that runs a step is handed in: this layer never imports the engine.

May import: ``base``, ``hooks``, ``submissions``, ``planning``, ``store``.
"""
