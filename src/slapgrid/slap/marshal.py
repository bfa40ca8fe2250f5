"""The xml_marshaller wire format of the SLAP protocol, both directions.

Output is byte-identical to what the reference (xml_marshaller 1.0.3 through lxml) emits:
ASCII with character references, container ids counted from `i2` in document order,
dictionary items sorted by key, strings escaped twice, a `<reference>` for a container
seen again. Input is parsed without DTDs, entities or network access, within a size bound,
and anything that is not a SLAP document raises `ProtocolError`.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from slapgrid.slap.errors import ProtocolError

SLAP_MODULE = "slapos.slap.slap"
SLAP_CLASSES = frozenset({"Computer", "ComputerPartition", "SoftwareRelease", "SoftwareInstance"})
MAX_DOCUMENT_BYTES = 64 << 20
MAX_DEPTH = 64

_LONG_BOUND = 1e24  # the reference writes <long> outside (-1e24, 1e24), compared exactly


@dataclass(eq=False)
class SlapObject:
    """An `<object>` of the wire: a SLAP class with its init arguments and attributes."""

    cls: str
    args: tuple[Any, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)
    module: str = SLAP_MODULE

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlapObject):
            return NotImplemented
        return (self.module, self.cls, self.args, self.state) == (
            other.module,
            other.cls,
            other.args,
            other.state,
        )

    __hash__ = None  # type: ignore[assignment]


# --- writing ---------------------------------------------------------------------------
# Written as text, not as an lxml tree: a master renders thousands of documents. What lxml
# would write differently than plain ASCII (other characters, carriage returns, control
# characters it refuses) is handed to lxml itself, one string at a time, so the bytes stay
# lxml's.

_PLAIN_TEXT = re.compile(r"[\t\n\x20-\x7e]*")
_NOTHING_TO_ESCAPE = re.compile(r"[\t\n\x20-\x25\x27-\x3b=\x3f-\x7e]*")  # no & < >
_PLAIN_ATTRIBUTE = re.compile(r"[\w.:-]*", re.ASCII)


def _escape(text: str) -> str:
    """The marshaller's own escaping; lxml escapes the result once more."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _string(text: str) -> str:
    """Documents repeat the same keys and short values: those are escaped once (a bounded
    cache of short strings: a parameter may be megabytes)."""
    return _short_string(text) if len(text) <= _CACHED_LENGTH else _escaped_string(text)


_CACHED_LENGTH = 256


@functools.lru_cache(maxsize=1 << 16)
def _short_string(text: str) -> str:
    return _escaped_string(text)


def _escaped_string(text: str) -> str:
    if _NOTHING_TO_ESCAPE.fullmatch(text):
        return f"<string>{text}</string>"
    if _PLAIN_TEXT.fullmatch(text):
        return f"<string>{_escape(_escape(text))}</string>"
    element = etree.Element("string")
    try:
        element.text = _escape(text)
    except ValueError as exc:
        raise ProtocolError(f"cannot marshal string {text[:40]!r}: {exc}") from None
    return etree.tostring(element).decode("ascii")


def _attribute(name: str, value: str) -> str:
    if _PLAIN_ATTRIBUTE.fullmatch(value):
        return f' {name}="{value}"'
    return etree.tostring(etree.Element("a", {name: value})).decode("ascii")[2:-2]


class _Writer:
    def __init__(self) -> None:
        self.counter = 1
        self.seen: dict[int, str] = {}
        self.parts: list[str] = []

    def _open(self, tag: str, value: object, attributes: str = "") -> int | None:
        """Open a list/dict/set/object element (→ its index in `parts`), or write a
        reference (→ None) if it was written already."""
        ref = self.seen.get(id(value))
        if ref is not None:
            self.parts.append(f'<reference id="{ref}"/>')
            return None
        self.counter += 1
        ident = f"i{self.counter}"
        self.seen[id(value)] = ident
        return self._start(f'<{tag} id="{ident}"{attributes}>')

    def _start(self, tag: str) -> int:
        self.parts.append(tag)
        return len(self.parts) - 1

    def _close(self, start: int, tag: str) -> None:
        """Close the element opened at `start`: `<tag …/>` if it holds nothing, as lxml."""
        if len(self.parts) == start + 1:
            self.parts[start] = self.parts[start][:-1] + "/>"
        else:
            self.parts.append(f"</{tag}>")

    def write(self, value: Any) -> None:
        # by exact type first: documents are thousands of values, mostly strings
        write = _WRITERS.get(type(value))
        if write is None:
            write = next((w for kind, w in _WRITERS.items() if isinstance(value, kind)), None)
            if write is None:
                raise ProtocolError(f"cannot marshal a {type(value).__name__}")
        write(self, value)

    def _items(self, values: Iterable[Any]) -> None:
        """Write each value; strings, most of a document, without a call to `write`."""
        append, write = self.parts.append, self.write
        for value in values:
            if type(value) is str:
                append(_string(value))
            else:
                write(value)

    def _none(self, _value: None) -> None:
        self.parts.append("<none/>")

    def _bool(self, value: bool) -> None:
        self.parts.append("<bool>1</bool>" if value else "<bool>0</bool>")

    def _int(self, value: int) -> None:
        tag = "int" if -_LONG_BOUND < value < _LONG_BOUND else "long"
        self.parts.append(f"<{tag}>{int.__str__(value)}</{tag}>")

    def _float(self, value: float) -> None:
        self.parts.append(f"<float>{value!r}</float>")

    def _str(self, value: str) -> None:
        self.parts.append(_string(value))

    def _bytes(self, value: bytes) -> None:
        self.parts.append(_string(value.decode("utf-8")))

    def _tuple(self, value: tuple[Any, ...]) -> None:
        start = self._start("<tuple>")
        self._items(value)
        self._close(start, "tuple")

    def _sequence(self, value: list[Any] | set[Any] | frozenset[Any]) -> None:
        tag = "list" if isinstance(value, list) else "set"
        start = self._open(tag, value)
        if start is not None:
            self._items(value)
            self._close(start, tag)

    def _dict(self, value: dict[Any, Any]) -> None:
        start = self._open("dictionary", value)
        if start is not None:
            self._items(itertools.chain.from_iterable(_sorted_items(value)))
            self._close(start, "dictionary")

    def _object(self, value: SlapObject) -> None:
        attributes = _attribute("module", value.module) + _attribute("class", value.cls)
        start = self._open("object", value, attributes)
        if start is not None:
            self.write(tuple(value.args))
            self.write(value.state)
            self._close(start, "object")


# subclasses are matched in this order (bool before int, as isinstance would)
_WRITERS: dict[type, Callable[[_Writer, Any], None]] = {
    type(None): _Writer._none,
    bool: _Writer._bool,
    int: _Writer._int,
    float: _Writer._float,
    str: _Writer._str,
    bytes: _Writer._bytes,
    tuple: _Writer._tuple,
    list: _Writer._sequence,
    set: _Writer._sequence,
    frozenset: _Writer._sequence,
    dict: _Writer._dict,
    SlapObject: _Writer._object,
}


def _sorted_items(mapping: dict[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return sorted(mapping.items(), key=lambda item: item[0])
    except TypeError:
        return sorted(mapping.items(), key=lambda item: repr(item[0]))


def dumps(value: Any) -> bytes:
    """Marshal a value (None, bool, int, float, str, bytes, tuple, list, set, dict, SlapObject)."""
    writer = _Writer()
    writer.write(value)
    return f"<marshal>{''.join(writer.parts)}</marshal>".encode("ascii")


# --- reading ---------------------------------------------------------------------------

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def parse_xml(data: bytes | str, *, what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse untrusted XML: bounded size, no DTD, no entities, no network."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise ProtocolError(f"{what} is {len(data)} bytes, more than the {max_bytes} allowed")
    if not data.strip():
        raise ProtocolError(f"{what} is empty")
    if b"<!DOCTYPE" in data:
        raise ProtocolError(f"{what} carries a DOCTYPE, which SLAP documents never do")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ProtocolError(f"{what} is not well-formed XML: {exc}") from None
    return root


def _local(element: Any) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        raise ProtocolError("unexpected entity or special node in a marshal document")
    return tag.rpartition("}")[2]  # "{namespace}name" or "name"


def _unescape(text: str | None) -> str:
    if not text:
        return ""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class _Reader:
    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def _register(self, element: Any, value: Any) -> None:
        ident = element.get("id")
        if ident is not None:
            self.objects[ident] = value

    def _children(self, element: Any, depth: int) -> list[Any]:
        return [self.read(child, depth + 1) for child in element]

    def read(self, element: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError(f"marshal document nested deeper than {MAX_DEPTH} levels")
        tag = _local(element)
        reader = _SCALARS.get(tag)
        if reader is not None:
            if len(element):
                raise ProtocolError(f"<{tag}> must not contain elements")
            try:
                return reader(element.text)
            except ValueError:
                raise ProtocolError(f"invalid <{tag}> value {element.text!r}") from None
        if tag == "tuple":
            return tuple(self._children(element, depth))
        if tag == "list":
            items: list[Any] = []
            self._register(element, items)
            items.extend(self._children(element, depth))
            return items
        if tag == "set":
            return set(self._hashable(self._children(element, depth), "set member"))
        if tag == "dictionary":
            mapping: dict[Any, Any] = {}
            self._register(element, mapping)
            values = self._children(element, depth)
            if len(values) % 2:
                raise ProtocolError("<dictionary> has an odd number of children")
            keys = self._hashable(values[0::2], "dictionary key")
            mapping.update(zip(keys, values[1::2], strict=True))
            return mapping
        if tag == "object":
            return self._object(element, depth)
        if tag == "reference":
            ident = element.get("id")
            if ident not in self.objects:
                raise ProtocolError(f"<reference id={ident!r}> points to nothing before it")
            return self.objects[ident]
        raise ProtocolError(f"unknown marshal element <{tag}>")

    @staticmethod
    def _hashable(values: list[Any], what: str) -> list[Any]:
        for value in values:
            try:
                hash(value)
            except TypeError:
                raise ProtocolError(f"a {what} cannot be a {type(value).__name__}") from None
        return values

    def _object(self, element: Any, depth: int) -> SlapObject:
        module, cls = element.get("module"), element.get("class")
        if module != SLAP_MODULE or cls not in SLAP_CLASSES:
            raise ProtocolError(f"refusing to unmarshal class {module}.{cls}")
        obj = SlapObject(cls=cls, module=module)
        self._register(element, obj)
        parts = list(element)
        if not parts or _local(parts[0]) != "tuple" or len(parts) > 2:
            raise ProtocolError(f"<object class={cls!r}> must hold a tuple and a dictionary")
        obj.args = self.read(parts[0], depth + 1)
        if len(parts) == 2:
            state = self.read(parts[1], depth + 1)
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise ProtocolError(f"<object class={cls!r}> state must be a string-keyed dict")
            obj.state = state
        return obj


def _bool(text: str | None) -> bool:
    """xml_marshaller writes 0 or 1; anything else is not a boolean it wrote."""
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


_SCALARS: dict[str, Callable[[str | None], Any]] = {
    "none": lambda text: None,
    "bool": _bool,
    "int": lambda text: int(text or ""),
    "long": lambda text: int(text or ""),
    "float": lambda text: float(text or ""),
    "string": _unescape,
    "unicode": _unescape,
}


def loads(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Unmarshal one SLAP document; `ProtocolError` for anything malformed or hostile."""
    root = parse_xml(data, what="marshal document", max_bytes=max_bytes)
    if _local(root) != "marshal" or len(root) != 1:
        raise ProtocolError("a marshal document is one <marshal> element holding one value")
    return _Reader().read(root[0])
