"""The plugin core: hook specifications, plugin entries, loading and precedence.

- ``specs``: the hooks (``register_models(register)``, ...) and ``hookimpl``;
- ``entries``: :class:`PluginEntry` and the parameter base classes;
- ``loading``: entry points -> pluggy -> a queryable :class:`Registry`;
- ``precedence``: which of two entries of one name wins (a pure function).

May import: ``base``.
"""
