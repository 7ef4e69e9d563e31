"""Read a YAML document that someone else wrote, without trusting it.

Every limit is checked before the cost it guards against is paid: the file must be a regular file
(not a FIFO or a device, which would hang or never end) of at most :data:`MAX_BYTES`, decoded as
strict UTF-8 without control characters; the YAML must nest at most :data:`MAX_DEPTH` deep (the
composer is recursive), hold at most :data:`MAX_PARSED_NODES` values, may use aliases only while
the document, expanded, stays under :data:`MAX_NODES` values (no alias bombs), may not repeat a key in a mapping (the last one would silently win), may not carry tags
(``!!binary``, ``!!python/...``, ``!custom``: only plain YAML values), and its integers must fit
in 64 bits (Python refuses to parse more than 4,300 digits; SQLite stores 64).

Events come from libyaml when PyYAML has it (C, about 50x faster than the pure-Python scanner, so
even a document at the size limit is refused in well under a second) and are composed by the
checked Python composer below either way. Problems raise :class:`YAMLInputError` with the
1-based line; the message is one short line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 256 * 1024
MAX_DEPTH = 40
MAX_PARSED_NODES = 20_000  # values as written (a shipped submission has about 200)
MAX_NODES = 100_000  # values once aliases are expanded
INT_BITS = 63  # |value| < 2**63: SQLite's INTEGER and every int64 tensor


@dataclass
class YAMLInputError(Exception):
    line: int
    message: str

    def __str__(self) -> str:
        return self.message


def preview(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters (errors never echo a whole input)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    if isinstance(value, (list, dict, tuple, set)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value):,} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; raise :class:`YAMLInputError`.

    The file's type is checked on the opened descriptor (``O_NONBLOCK``: opening a FIFO does not
    wait for a writer), and at most ``max_bytes + 1`` bytes are ever read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise YAMLInputError(1, f"cannot read file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise YAMLInputError(1, f"cannot read file: {kind}")
        if info.st_size > max_bytes:
            raise YAMLInputError(
                1, f"file too large ({info.st_size:,} bytes; a submission is at most {max_bytes:,})"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise YAMLInputError(1, f"cannot read file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise YAMLInputError(1, f"file too large (a submission is at most {max_bytes:,} bytes)")
    return decode(data)


def decode(data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is allowed); control characters are refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YAMLInputError(
            line, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    check_printable(text)
    return text


def check_printable(text: str) -> None:
    """Refuse the control characters YAML does not allow, naming the line."""
    bad = Reader.NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise YAMLInputError(line, f"control character {bad.group()!r} in the text")


class _Composer(Composer):
    """PyYAML's composer with a depth limit, a node limit, an expanded-size limit and no tags."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        self._depth = getattr(self, "_depth", 0) + 1
        self._nodes = getattr(self, "_nodes", 0) + 1
        try:
            if self._nodes > MAX_PARSED_NODES:
                raise YAMLInputError(line, f"more than {MAX_PARSED_NODES:,} values in the document")
            if self._depth > MAX_DEPTH:
                raise YAMLInputError(line, f"nested deeper than {MAX_DEPTH} levels")
            if not isinstance(event, AliasEvent):
                tag = getattr(event, "tag", None)
                if (
                    tag is not None
                    and tag != "!"
                    and isinstance(event, (ScalarEvent, SequenceStartEvent, MappingStartEvent))
                ):
                    short = tag.replace("tag:yaml.org,2002:", "!!")
                    raise YAMLInputError(
                        line, f"YAML tag {preview(short, 40)} not allowed (only plain values)"
                    )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        return node

    def compose_document(self):
        node = super().compose_document()
        _check_size(node)
        return node


def _check_size(root: yaml.Node) -> None:
    """Refuse a document whose alias-expanded tree exceeds :data:`MAX_NODES` values (alias
    bombs) or that contains itself (a recursive alias)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if not done:
            if id(node) in open_:
                raise YAMLInputError(node.start_mark.line + 1, "recursive alias")
            open_.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in open_:
                    raise YAMLInputError(child.start_mark.line + 1, "recursive alias")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_.discard(id(node))
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_NODES:
            raise YAMLInputError(
                node.start_mark.line + 1,
                f"document too large once aliases are expanded (over {MAX_NODES:,} values)",
            )
        sizes[id(node)] = total


class _Constructor(SafeConstructor):
    """Safe construction with duplicate keys refused and integers bounded to 64 bits."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode) and not getattr(node, "_keys_checked", False):
            node._keys_checked = True
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:  # before merges: an explicit key may override one
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YAMLInputError(line, "a mapping key must be a plain value")
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise YAMLInputError(
                        line, f"duplicate key {preview(key, 40)} (first on line {seen[key]})"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = str(node.value).replace("_", "").lstrip("+-")
        if len(text) > 24:  # more digits than any 64-bit value has, whatever the base
            raise YAMLInputError(
                node.start_mark.line + 1, f"integer too large ({len(text):,} digits)"
            )
        value = super().construct_yaml_int(node)
        if abs(value) >= 2**INT_BITS:
            raise YAMLInputError(
                node.start_mark.line + 1, f"integer {preview(value, 30)} does not fit in 64 bits"
            )
        return value

    def construct_undefined(self, node):
        raise YAMLInputError(node.start_mark.line + 1, "YAML tags are not allowed")


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)
_Constructor.add_constructor(None, _Constructor.construct_undefined)
for _tag in ("binary", "set", "omap", "pairs"):  # reachable only through explicit tags
    _Constructor.add_constructor(f"tag:yaml.org,2002:{_tag}", _Constructor.construct_undefined)
# an implicit date (``2024-01-01``) stays the text it is: dates are not JSON values
_Constructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)


class SafeLoader(Reader, Scanner, Parser, _Composer, _Constructor, Resolver):
    """Pure-Python events (PyYAML's reader, scanner and parser) into the checked composer."""

    def __init__(self, stream: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        Resolver.__init__(self)


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class FastLoader(_Composer, _Constructor, Resolver, CParser):
        """libyaml's events (C: fast, iterative) into the same checked Python composer; the
        composer comes first in the MRO, so libyaml's own (unchecked) composer is never used."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            _Composer.__init__(self)
            _Constructor.__init__(self)
            Resolver.__init__(self)

    LOADER: type = FastLoader
else:  # pragma: no cover - PyYAML built without libyaml
    LOADER = SafeLoader


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """``(data, root node)`` of one YAML document (the node carries line numbers).

    Raises :class:`YAMLInputError` for any limit above and for YAML syntax errors.
    """
    check_printable(text)
    loader = None
    try:
        loader = LOADER(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except YAMLInputError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise YAMLInputError(mark.line + 1 if mark else 1, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YAMLInputError(1, f"invalid YAML: {preview(str(exc), 120)}") from None
    except RecursionError:  # belt and braces: MAX_DEPTH is far below the interpreter's limit
        raise YAMLInputError(1, f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def load_file(path: str | Path, max_bytes: int = MAX_BYTES) -> tuple[Any, yaml.Node | None]:
    """:func:`read_text` then :func:`load`."""
    return load(read_text(path, max_bytes))
