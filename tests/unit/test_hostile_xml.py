"""Hostile documents: each a clear ProtocolError, in bounded time and memory."""

from __future__ import annotations

import resource
import time

import pytest

from slapgrid.slap import instance_xml, marshal
from slapgrid.slap.errors import ProtocolError

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<marshal><string>&lol9;</string></marshal>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<marshal><string>&xxe;</string></marshal>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE marshal SYSTEM "http://127.0.0.1:9/evil.dtd">
<marshal><string>x</string></marshal>"""


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "document", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["laughs", "xxe", "dtd"]
)
@pytest.mark.parametrize("parse", [marshal.loads, instance_xml.loads], ids=["marshal", "instance"])
def test_entities_and_dtds_are_refused(document: bytes, parse: object) -> None:
    before = _peak_rss_mib()
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="DOCTYPE"):
        parse(document)  # type: ignore[operator]
    assert time.monotonic() - started < 1
    assert _peak_rss_mib() - before < 50


def test_external_entity_never_reads_the_file() -> None:
    with pytest.raises(ProtocolError) as caught:
        marshal.loads(EXTERNAL_ENTITY)
    assert "root:" not in str(caught.value)


def test_oversized_document_is_refused_before_parsing() -> None:
    body = b"<marshal><string>" + b"a" * (50 << 20) + b"</string></marshal>"
    before = _peak_rss_mib()
    with pytest.raises(ProtocolError, match="more than the"):
        marshal.loads(body, max_bytes=32 << 20)
    assert _peak_rss_mib() - before < 50


@pytest.mark.parametrize(
    "document",
    [
        b"<marshal><dictionary id='i2'><string>k</string>",
        b"<marshal><list id='i2'><int>1</int></lis",
        b"\x00\x01\x02",
        b"<instance><parameter id='a'>1</parameter>",
    ],
)
def test_truncated_or_binary_documents(document: bytes) -> None:
    with pytest.raises(ProtocolError, match="not well-formed"):
        marshal.loads(document)


def test_deep_nesting_is_bounded() -> None:
    document = b"<marshal>" + b"<tuple>" * 200 + b"</tuple>" * 200 + b"</marshal>"
    with pytest.raises(ProtocolError, match="nested deeper"):
        marshal.loads(document)
