"""What a shared database's notifications carry: the changed computers, in payloads
PostgreSQL accepts."""

from __future__ import annotations

from slapgrid.master.notifications import (
    MAX_PAYLOAD,
    decode,
    new_sender,
    payloads,
    retry_delay,
)


def test_many_computers_are_split_under_the_payload_limit_and_read_back() -> None:
    sender = new_sender()
    computers = [f'COMP-{i}-é"\\{"x" * 200}' for i in range(500)]
    chunks = payloads(sender, computers)
    assert len(chunks) > 1
    assert all(len(chunk.encode()) <= MAX_PAYLOAD for chunk in chunks)
    decoded = [decode(chunk) for chunk in chunks]
    assert {d[0] for d in decoded if d} == {sender}
    assert [c for d in decoded if d for c in d[1]] == computers


def test_one_computer_is_one_payload_and_none_is_none() -> None:
    assert payloads("me", ["COMP-1"]) == ['{"sender":"me","computers":["COMP-1"]}']
    assert payloads("me", []) == []
    assert new_sender() != new_sender()


def test_a_payload_not_ours_means_anything_may_have_changed() -> None:
    for payload in ("COMP-1", '{"a": 1}', "[1]", '["COMP-1"]', '{"sender": 1, "computers": []}'):
        assert decode(payload) is None, payload
    assert decode('{"sender": "me", "computers": [1]}') is None


def test_listening_again_backs_off_up_to_a_cap() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] < 1 and delays[-1] == 5.0
