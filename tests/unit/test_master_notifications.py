"""What a shared database's notifications carry: the changed computers, in payloads
PostgreSQL accepts."""

from __future__ import annotations

from slapgrid.master.notifications import MAX_PAYLOAD, decode, payloads, retry_delay


def test_many_computers_are_split_under_the_payload_limit_and_read_back() -> None:
    computers = [f'COMP-{i}-é"\\{"x" * 200}' for i in range(500)]
    chunks = payloads(computers)
    assert len(chunks) > 1
    assert all(len(chunk.encode()) <= MAX_PAYLOAD for chunk in chunks)
    assert [c for chunk in chunks for c in decode(chunk) or []] == computers


def test_one_computer_is_one_payload_and_none_is_none() -> None:
    assert payloads(["COMP-1"]) == ['["COMP-1"]']
    assert payloads([]) == []


def test_a_payload_not_ours_means_anything_may_have_changed() -> None:
    assert decode("COMP-1") is None
    assert decode('{"a": 1}') is None
    assert decode("[1]") is None


def test_listening_again_backs_off_up_to_a_cap() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] < 1 and delays[-1] == 5.0
