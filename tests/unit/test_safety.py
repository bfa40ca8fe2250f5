"""Master-given partition ids and header values: what passes and what is refused."""

from __future__ import annotations

import pytest

from slapgrid.node import safety
from slapgrid.slap.client import partition_auth_header
from slapgrid.slap.errors import ProtocolError


@pytest.mark.parametrize("pid", ["slappart0", "a", "S_1.x-y", "x" * 100])
def test_plain_partition_ids_pass(pid: str) -> None:
    assert safety.partition_id(pid) == pid


@pytest.mark.parametrize(
    "pid",
    ["slappart0\n", "slappärt", "ｓｌａｐ", "x" * 101, "", ".slapgrid", "..", "a/b", "a\x00"],
)
def test_other_partition_ids_are_refused(pid: str) -> None:
    with pytest.raises(safety.UnsafeValueError, match="refusing partition id"):
        safety.partition_id(pid)


@pytest.mark.parametrize("pid", ["slappart0\n", "slappärt", "a b", "a,b", "a\r\nX-Evil: 1", ""])
def test_values_that_would_break_the_partition_header_are_not_sent(pid: str) -> None:
    with pytest.raises(ProtocolError, match="refusing to send partition id"):
        partition_auth_header("COMP-1", pid)


def test_the_partition_header_names_computer_and_partition() -> None:
    assert partition_auth_header("COMP-1", "slappart0") == {
        "Authorization": "X-SlapPartition computer_id=COMP-1, computer_partition_id=slappart0"
    }
