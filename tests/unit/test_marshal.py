"""The wire codec against the real xml_marshaller: every shape, both directions."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from xml_marshaller import xml_marshaller as reference

from slapgrid.slap import marshal
from slapgrid.slap.documents import Computer
from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import SlapObject

DATA = Path(__file__).parent / "data"

SCALARS_AND_CONTAINERS = [
    None,
    True,
    False,
    0,
    -7,
    2**62,
    10**24,
    -(10**24),
    999999999999999999999999,
    1.5,
    0.1,
    -2.5e-300,
    "",
    "plain",
    "a&b<c>d",
    "&lt;already escaped&gt; &amp;",
    "é ü 中文 \U0001f600",
    "tab\tnewline\ncarriage\r",
    "quotes \"double\" and 'single'",
    b"utf-8 bytes \xc3\xa9",
    (),
    (1, "x", None),
    [],
    [1, [2, [3, []]]],
    {"b": 1, "a": [1, 2], "c": {"nested": (True, None)}},
    {3: "int keys", 1: "sorted"},
    {1, 2, 3},
    {"": ""},
]


@pytest.mark.parametrize("value", SCALARS_AND_CONTAINERS, ids=repr)
def test_dumps_is_byte_identical_to_reference(value: object) -> None:
    assert marshal.dumps(value) == reference.dumps(value)


@pytest.mark.parametrize("value", SCALARS_AND_CONTAINERS, ids=repr)
def test_loads_reads_what_reference_writes(value: object) -> None:
    expected = reference.loads(reference.dumps(value))
    assert marshal.loads(reference.dumps(value)) == expected


@pytest.mark.parametrize("value", SCALARS_AND_CONTAINERS, ids=repr)
def test_reference_reads_what_we_write(value: object) -> None:
    assert reference.loads(marshal.dumps(value)) == marshal.loads(marshal.dumps(value))


def test_shared_containers_become_references_both_ways() -> None:
    shared = {"k": "v"}
    value = [shared, shared, [shared]]
    document = marshal.dumps(value)
    assert document == reference.dumps(value)
    assert b'<reference id="i3"/>' in document
    decoded = marshal.loads(document)
    assert decoded[0] is decoded[1] is decoded[2][0]


def test_double_escaping_on_the_wire() -> None:
    assert marshal.dumps("http://a&b<c>/") == (
        b"<marshal><string>http://a&amp;amp;b&amp;lt;c&amp;gt;/</string></marshal>"
    )
    assert marshal.dumps("é") == b"<marshal><string>&#233;</string></marshal>"


def test_namespaced_unicode_and_pretty_printed_documents_are_read() -> None:
    document = """
    <marshal:marshal xmlns:marshal="http://www.erp5.org/namespaces/marshaller">
      <marshal:list id="i2">
        <marshal:unicode>caf&amp;amp;&#233;</marshal:unicode>
        <marshal:long>12</marshal:long>
        <marshal:string/>
      </marshal:list>
    </marshal:marshal>"""
    assert marshal.loads(document) == ["caf&é", 12, ""]


def _install_fake_slap_classes(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Classes named like the reference's, so the real marshaller can write real objects."""
    module = types.ModuleType("slapos.slap.slap")

    def make(name: str, initargs: tuple[str, ...]) -> type:
        def __init__(self: object, *args: object) -> None:
            for attribute, arg in zip(initargs, args, strict=False):
                setattr(self, attribute, arg)

        def __getinitargs__(self: object) -> tuple[object, ...]:
            return tuple(getattr(self, attribute) for attribute in initargs)

        namespace = {"__init__": __init__, "__module__": "slapos.slap.slap"}
        if initargs:
            namespace["__getinitargs__"] = __getinitargs__
        return type(name, (), namespace)

    module.Computer = make("Computer", ("_computer_id",))
    module.ComputerPartition = make(
        "ComputerPartition", ("_computer_id", "_partition_id", "_request_dict")
    )
    module.SoftwareRelease = make("SoftwareRelease", ("_software_release", "_computer_guid"))
    module.SoftwareInstance = make("SoftwareInstance", ())
    for name in ("slapos", "slapos.slap"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "slapos.slap.slap", module)
    return module


def test_worked_example_round_trips_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """§3.4 of the protocol reference: the production master's getFullComputerInformation."""
    slap = _install_fake_slap_classes(monkeypatch)
    wire = (DATA / "full_computer_information.xml").read_bytes()
    computer = Computer.from_wire(marshal.loads(wire))
    assert [p.partition_id for p in computer.partitions] == ["slappart0", "slappart1"]
    assert computer.partitions[0].timestamp == "1700000000123456"
    assert computer.partitions[1].is_free

    # the real marshaller writes the same objects the same way we do
    real_objects = reference.loads(wire)
    assert isinstance(real_objects, slap.Computer)
    assert marshal.dumps(computer.to_wire()) == reference.dumps(real_objects)
    # and the document matches the reference text but for the spelling of an empty string
    normalised = re.sub(rb"<string/>", b"<string></string>", wire)
    assert marshal.dumps(computer.to_wire()) == normalised


def test_object_state_and_args_are_kept() -> None:
    value = SlapObject("SoftwareInstance", (), {"_instance_guid": "SOFTINST-1", "x": [1]})
    assert marshal.loads(marshal.dumps(value)) == value


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"", "empty"),
        (b"<marshal><string>x</string>", "not well-formed"),
        (b"<marshal><int>x</int></marshal>", "invalid <int>"),
        (b"<marshal><frobnicate/></marshal>", "unknown marshal element"),
        (b"<other><int>1</int></other>", "one <marshal> element"),
        (b"<marshal><int>1</int><int>2</int></marshal>", "one <marshal> element"),
        (b'<marshal><reference id="i9"/></marshal>', "points to nothing"),
        (b'<marshal><dictionary id="i2"><int>1</int></dictionary></marshal>', "odd number"),
        (b'<marshal><dictionary id="i2"><list id="i3"/><int>1</int></dictionary></marshal>', "key"),
        (
            b'<marshal><object id="i2" module="os" class="system"><tuple/></object></marshal>',
            "refusing to unmarshal class os.system",
        ),
        (
            b'<marshal><object id="i2" module="slapos.slap.slap" class="Computer"/></marshal>',
            "must hold a tuple",
        ),
        (b"<marshal><int><int>1</int></int></marshal>", "must not contain elements"),
    ],
)
def test_malformed_documents_raise_protocol_error(document: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        marshal.loads(document)


def test_unmarshallable_values_raise() -> None:
    with pytest.raises(ProtocolError, match="cannot marshal a object"):
        marshal.dumps(object())
    with pytest.raises(ProtocolError, match="cannot marshal string"):
        marshal.dumps("nul \x00 byte")
