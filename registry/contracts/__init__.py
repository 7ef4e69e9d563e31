"""What plugins promise the core, torch-free: the :class:`Constraint` a constraint factory
returns, the :class:`Benchmark` a benchmark factory returns, the :class:`NeuralData` a
neural-data factory returns.

May import: ``base``, ``hooks``.
"""
