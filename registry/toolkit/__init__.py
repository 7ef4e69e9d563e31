"""The toolkit plugins build with: image data (``data``), layer surgery and shared modules
(``layers``), extra training terms (``objective``), neural metrics (``neural_metrics``).

May import: ``base``, ``hooks``, ``contracts``.
"""
