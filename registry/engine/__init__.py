"""The training engine: the trainer (``trainer``), batched members (``batched``,
``batched_layout``, ``batched_autocast``), their checkpoints (``checkpoint``), where data lives
(``streaming``), estimates (``estimate``), trained models shared and cached (``service``), the
benchmark's context (``context``), the step runner (``runner``) and the worker any process can
rebuild (``worker``).

May import: every layer below ``execution``.
"""
