"""The two SLAP calls an instance of this example makes, with the standard library only.

The example must also run under the reference node agent, so it carries its own tiny
xml_marshaller codec: a reader for whatever the master sends, and a writer for the flat
string dictionaries published as connection parameters.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

TIMEOUT = 60


class SlapCallError(Exception):
    """A SLAP call failed; the message is one line."""


def _unescape(text: str) -> str:
    # xml_marshaller escapes & < > itself before the XML layer escapes them again.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def loads(data: bytes | str) -> Any:
    """Parse an xml_marshaller document; objects become {"class", "args", "state"}."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SlapCallError(f"the master sent invalid XML: {exc}") from None
    if _tag(root) != "marshal" or len(root) != 1:
        raise SlapCallError("the master sent something that is not a marshal document")
    return _value(root[0], {})


def _tag(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _value(element: ET.Element, seen: dict[str, Any]) -> Any:
    tag, text = _tag(element), element.text or ""
    if tag == "none":
        return None
    if tag == "bool":
        return bool(int(text))
    if tag in ("int", "long"):
        return int(text)
    if tag == "float":
        return float(text)
    if tag in ("string", "unicode"):
        return _unescape(text)
    if tag == "tuple":
        return tuple(_value(child, seen) for child in element)
    if tag == "reference":
        return seen[element.get("id", "")]
    if tag in ("list", "set"):
        items: list[Any] = []
        seen[element.get("id", "")] = items
        items.extend(_value(child, seen) for child in element)
        return items
    if tag == "dictionary":
        mapping: dict[Any, Any] = {}
        seen[element.get("id", "")] = mapping
        children = list(element)
        if len(children) % 2:
            raise SlapCallError("the master sent a dictionary with a key and no value")
        for key, value in zip(children[::2], children[1::2], strict=True):
            mapping[_value(key, seen)] = _value(value, seen)
        return mapping
    if tag == "object":
        obj: dict[str, Any] = {"class": element.get("class"), "args": (), "state": {}}
        seen[element.get("id", "")] = obj
        for child in element:
            if _tag(child) == "tuple":
                obj["args"] = _value(child, seen)
            else:
                obj["state"] = _value(child, seen)
        return obj
    raise SlapCallError(f"the master sent an unknown marshal element <{tag}>")


def dumps_dict(values: dict[str, str]) -> str:
    """Marshal a flat str → str dictionary, byte-compatible with xml_marshaller."""
    items = "".join(
        f"<string>{_text(key)}</string><string>{_text(value)}</string>"
        for key, value in sorted(values.items())
    )
    return f'<marshal><dictionary id="i2">{items}</dictionary></marshal>'


def _text(value: str) -> str:
    doubly_escaped = escape(escape(value))
    return doubly_escaped.encode("ascii", "xmlcharrefreplace").decode("ascii")


class Master:
    """The master as seen by one partition (the `[slap-connection]` of its buildout)."""

    def __init__(
        self, server_url: str, computer_id: str, partition_id: str, key_file="", cert_file=""
    ):
        if not server_url:
            raise SlapCallError("[slap-connection] server-url is empty")
        self.base = server_url if server_url.endswith("/") else server_url + "/"
        self.computer_id = computer_id
        self.partition_id = partition_id
        self.context = None
        if self.base.startswith("https:"):
            # Like the reference library: the master's certificate is not verified, the
            # partition identifies itself with its own certificate when it has one.
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
            if cert_file:
                self.context.load_cert_chain(cert_file, key_file or None)

    def _call(self, method: str, *, query=None, form=None) -> bytes:
        url = urllib.parse.urljoin(self.base, method)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=body)
        request.add_header(
            "Authorization",
            f"X-SlapPartition computer_id={self.computer_id}, "
            f"computer_partition_id={self.partition_id}",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            raise SlapCallError(f"{method}: the master answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = f"cannot reach the master at {self.base}: {exc}"
            raise SlapCallError(f"{method}: {reason}") from None

    def parameters(self) -> dict[str, Any]:
        """The partition's `_parameter_dict` (instance parameters merged with server keys)."""
        document = loads(
            self._call(
                "registerComputerPartition",
                query={
                    "computer_reference": self.computer_id,
                    "computer_partition_reference": self.partition_id,
                },
            )
        )
        if not isinstance(document, dict) or document.get("class") != "ComputerPartition":
            raise SlapCallError("registerComputerPartition did not answer a ComputerPartition")
        parameters = document["state"].get("_parameter_dict") or {}
        if not isinstance(parameters, dict):
            raise SlapCallError("registerComputerPartition: _parameter_dict is not a dictionary")
        return parameters

    def publish(self, connection: dict[str, str]) -> None:
        """Send the connection parameters of this partition's own instance."""
        self._call(
            "setComputerPartitionConnectionXml",
            form={
                "computer_id": self.computer_id,
                "computer_partition_id": self.partition_id,
                "connection_xml": dumps_dict(connection),
                "slave_reference": "None",
            },
        )
