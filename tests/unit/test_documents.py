"""Typed documents and instance XML, in the shapes both masters send."""

from __future__ import annotations

import pytest

from slapgrid.slap import instance_xml, marshal
from slapgrid.slap.documents import (
    Computer,
    ComputerPartition,
    SoftwareInstance,
    SoftwareRelease,
)
from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import SlapObject

PROXY_PARTITION = SlapObject(
    "ComputerPartition",
    ("COMP-TEST", "slappart0", None),
    {
        "_computer_id": "COMP-TEST",
        "_partition_id": "slappart0",
        "_request_dict": None,
        "_requested_state": "started",
        "_need_modification": 1,
        "_instance_guid": "COMP-TEST-slappart0",
        "_connection_dict": {},
        "_parameter_dict": {
            "timestamp": "1795532666.3238828",
            "full_address_list": [],
            "slap_software_type": "default",
            "ip_list": [("slappart0", "10.0.0.2")],
        },
        "_software_release_document": SlapObject(
            "SoftwareRelease",
            ("https://x/software.cfg", "COMP-TEST"),
            {"_software_release": "https://x/software.cfg", "_computer_guid": "COMP-TEST"},
        ),
    },
)


def test_proxy_shape_with_float_string_timestamp() -> None:
    partition = ComputerPartition.from_wire(PROXY_PARTITION)
    assert partition.timestamp == "1795532666.3238828"
    assert partition.software_release_url == "https://x/software.cfg"
    assert partition.software_type == "default"
    assert partition.ip_list == [("slappart0", "10.0.0.2")]
    assert not partition.is_free
    assert partition.access_status is None  # the proxy never sends it


def test_partition_round_trip_keeps_master_shape() -> None:
    partition = ComputerPartition.from_wire(PROXY_PARTITION)
    again = ComputerPartition.from_wire(marshal.loads(marshal.dumps(partition.to_wire())))
    assert again == partition


def test_free_partition_and_defaults() -> None:
    free = ComputerPartition("C", "slappart1")
    assert free.is_free and free.timestamp is None and free.slave_instance_list == []
    state = free.to_wire().state
    assert state["_software_release_document"] is None and "_parameter_dict" not in state


def test_software_release_state_defaults_to_available() -> None:
    release = SoftwareRelease.from_wire(SlapObject("SoftwareRelease", ("u", "C"), {}))
    assert release.url == "u" and release.state == "available"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not an object", "expected a Computer document"),
        (SlapObject("ComputerPartition"), "expected a Computer document"),
        (SlapObject("Computer", (), {"_computer_id": 3}), "Computer._computer_id"),
        (
            SlapObject("Computer", ("C",), {"_computer_partition_list": "nope"}),
            "_computer_partition_list",
        ),
        (
            SlapObject("Computer", ("C",), {"_computer_partition_list": [SlapObject("Computer")]}),
            "expected a ComputerPartition",
        ),
    ],
)
def test_wrong_shapes_are_protocol_errors(value: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Computer.from_wire(value)


def test_software_instance_accessors() -> None:
    instance = SoftwareInstance.from_wire(
        SlapObject(
            "SoftwareInstance",
            (),
            {
                "slap_computer_id": "C",
                "slap_computer_partition_id": "slappart3",
                "_connection_dict": {"url": "http://x"},
                "_requested_state": "started",
            },
        )
    )
    assert (instance.computer_id, instance.partition_id) == ("C", "slappart3")
    assert instance.connection == {"url": "http://x"}


def test_instance_xml_matches_reference_format() -> None:
    document = instance_xml.dumps({"b": "x&y", "a": 1, "_": '{"k": [1, 2]}'})
    assert document == (
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n"
        '  <parameter id="_">{"k": [1, 2]}</parameter>\n'
        '  <parameter id="a">1</parameter>\n'
        '  <parameter id="b">x&amp;y</parameter>\n</instance>\n'
    )
    assert instance_xml.loads(document) == {"_": '{"k": [1, 2]}', "a": "1", "b": "x&y"}
    assert instance_xml.dumps({}) == "<?xml version='1.0' encoding='utf-8'?>\n<instance/>\n"


def test_instance_xml_repeated_and_empty_parameters() -> None:
    document = (
        '<instance><parameter id="a">1</parameter><parameter id="a">2</parameter>'
        '<parameter id="e"/><parameter id="e">3</parameter><other id="x">y</other></instance>'
    )
    assert instance_xml.loads(document) == {"a": "1 2", "e": "3"}
    assert instance_xml.loads(None) == {} and instance_xml.loads("") == {}


def test_json_in_xml_convention() -> None:
    wrapped = instance_xml.wrap_json({"ram": 2048, "name": "x"})
    assert list(wrapped) == ["_"]
    assert instance_xml.unwrap_json({**wrapped, "timestamp": "1"}) == {
        "ram": 2048,
        "name": "x",
        "timestamp": "1",
    }
    assert instance_xml.unwrap_json({"_": "not json"}) == {"_": "not json"}
