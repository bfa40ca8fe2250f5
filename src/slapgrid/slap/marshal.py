"""The xml_marshaller wire format of the SLAP protocol, both directions.

Output is byte-identical to what the reference (xml_marshaller 1.0.3 through lxml) emits:
ASCII with character references, container ids counted from `i2` in document order,
dictionary items sorted by key, strings escaped twice, a `<reference>` for a container
seen again. Input is parsed without DTDs, entities or network access, within a size bound,
and anything that is not a SLAP document raises `ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _escape(text: str) -> str:
    """The marshaller's own escaping; lxml escapes the result once more."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Writer:
    def __init__(self) -> None:
        self.counter = 1
        self.seen: dict[int, str] = {}

    def _container(self, parent: etree._Element, tag: str, value: object) -> etree._Element | None:
        """Open a list/dict/set/object element, or emit a reference if already written."""
        ref = self.seen.get(id(value))
        if ref is not None:
            etree.SubElement(parent, "reference", id=ref)
            return None
        self.counter += 1
        ident = f"i{self.counter}"
        self.seen[id(value)] = ident
        return etree.SubElement(parent, tag, id=ident)

    def write(self, parent: etree._Element, value: Any) -> None:
        if value is None:
            etree.SubElement(parent, "none")
        elif isinstance(value, bool):
            etree.SubElement(parent, "bool").text = "1" if value else "0"
        elif isinstance(value, int):
            tag = "int" if -_LONG_BOUND < value < _LONG_BOUND else "long"
            etree.SubElement(parent, tag).text = str(value)
        elif isinstance(value, float):
            etree.SubElement(parent, "float").text = repr(value)
        elif isinstance(value, str | bytes):
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            try:
                etree.SubElement(parent, "string").text = _escape(text)
            except ValueError as exc:
                raise ProtocolError(f"cannot marshal string {text[:40]!r}: {exc}") from None
        elif isinstance(value, tuple):
            element = etree.SubElement(parent, "tuple")
            for item in value:
                self.write(element, item)
        elif isinstance(value, list | set | frozenset):
            tag = "list" if isinstance(value, list) else "set"
            element = self._container(parent, tag, value)
            if element is not None:
                for item in value:
                    self.write(element, item)
        elif isinstance(value, dict):
            element = self._container(parent, "dictionary", value)
            if element is not None:
                for key, item in _sorted_items(value):
                    self.write(element, key)
                    self.write(element, item)
        elif isinstance(value, SlapObject):
            element = self._container(parent, "object", value)
            if element is not None:
                element.set("module", value.module)
                element.set("class", value.cls)
                self.write(element, tuple(value.args))
                self.write(element, value.state)
        else:
            raise ProtocolError(f"cannot marshal a {type(value).__name__}")


def _sorted_items(mapping: dict[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return sorted(mapping.items(), key=lambda item: item[0])
    except TypeError:
        return sorted(mapping.items(), key=lambda item: repr(item[0]))


def dumps(value: Any) -> bytes:
    """Marshal a value (None, bool, int, float, str, bytes, tuple, list, set, dict, SlapObject)."""
    root = etree.Element("marshal")
    _Writer().write(root, value)
    return etree.tostring(root)


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
