"""Instance XML: how masters store and carry parameter and connection dicts.

`<instance><parameter id="key">value</parameter>…</instance>`. Every value is turned into a
string on the way in, which is why a node always receives string parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lxml import etree

from slapgrid.slap.marshal import parse_xml

JSON_KEY = "_"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def dumps(parameters: Mapping[str, Any]) -> str:
    """Serialise as the reference does: sorted ids, XML declaration, 2-space indentation."""
    root = etree.Element("instance")
    for key in sorted(parameters):
        etree.SubElement(root, "parameter", id=_text(key)).text = _text(parameters[key])
    document = etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="utf-8")
    return document.decode("utf-8")


def loads(document: str | bytes | None) -> dict[str, str | None]:
    """Direct `<parameter>` children by id; a repeated id joins its texts with a space."""
    if document is None or not str(document).strip():
        return {}
    root = parse_xml(document, what="instance XML")
    result: dict[str, str | None] = {}
    for child in root:
        if not isinstance(child.tag, str) or etree.QName(child.tag).localname != "parameter":
            continue
        key = child.get("id")
        if key is None:
            continue
        text = child.text or None
        previous = result.get(key)
        if previous is None:
            result[key] = text
        elif text is not None:
            result[key] = f"{previous} {text}"
    return result


def wrap_json(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The json-in-xml convention: the whole dict as one `_` parameter."""
    return {JSON_KEY: json.dumps(dict(parameters), indent=2, sort_keys=True)}


def unwrap_json(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a `_` parameter if there is one (and it is JSON), else return the dict as is."""
    raw = parameters.get(JSON_KEY)
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return dict(parameters)
        if isinstance(decoded, dict):
            rest = {k: v for k, v in parameters.items() if k != JSON_KEY}
            return {**rest, **decoded}
    return dict(parameters)
