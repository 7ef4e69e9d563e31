"""The toolkit plugins build with: image data (``data``), layer surgery and shared modules
(``layers``), extra training terms (``objective``), neural metrics (``neural_metrics``), per-image
correctness and error consistency (``consistency``).

May import: ``base``, ``hooks``, ``contracts``.
"""
