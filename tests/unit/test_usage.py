"""TioXML usage documents: measured movements, instance-written reports, the journal."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from lxml import etree

from slapgrid.node.report.destroy import DestroyError, retention_decision, retention_lock
from slapgrid.node.report.environment import Environment
from slapgrid.node.report.measure import (
    CPU,
    DISK,
    MEMORY,
    PROCESSES,
    Usage,
    dedicated_uid,
    usage_movements,
)
from slapgrid.slap.tioxml import (
    InvalidUsage,
    Movement,
    build_journal,
    computer_schema,
    parse_consumption,
    parse_journal,
)

STOP = datetime(2026, 11, 24, 15, 3, 21)


def consumption(*movements: str) -> bytes:
    return ("<consumption>" + "".join(movements) + "</consumption>").encode()


def movement(
    resource: str = "Backup size",
    quantity: str = "42.5",
    *,
    title: str | None = None,
    reference: str | None = None,
    categories: tuple[str, ...] = (),
) -> str:
    return (
        f"<movement><resource>{resource}</resource>"
        + (f"<title>{title}</title>" if title is not None else "")
        + (f"<reference>{reference}</reference>" if reference is not None else "")
        + f"<quantity>{quantity}</quantity><price>0.00</price><VAT>None</VAT>"
        + "".join(f"<category>{c}</category>" for c in categories)
        + "</movement>"
    )


def parse(journal: str) -> etree._Element:
    return etree.fromstring(journal.encode())


def movements_of(root: etree._Element) -> list[dict[str, object]]:
    return [
        {
            "resource": m.findtext("resource"),
            "title": m.findtext("title"),
            "reference": m.findtext("reference"),
            "quantity": m.findtext("quantity"),
            "price": m.findtext("price"),
            "VAT": m.findtext("VAT"),
            "category": [c.text for c in m.findall("category")],
        }
        for m in root.iter("movement")
    ]


def test_measured_usage_builds_a_journal_valid_against_the_master_schema() -> None:
    usage = Usage("slappart3", cpu_seconds=12.345, memory_bytes=1 << 20, process_count=3,
                  disk_bytes=8192)  # fmt: skip
    journal = build_journal("COMP-1234", usage_movements(usage), stop_date=STOP)

    assert "\n" not in journal
    assert journal.startswith(
        '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
        "<title>Resource consumptions</title><start_date></start_date>"
        "<stop_date>2026-11-24 at 15:03:21</stop_date><reference>COMP-1234</reference>"
        "<currency></currency><payment_mode></payment_mode><category></category>"
        '<arrow type="Administration"><source></source><destination></destination></arrow>'
        "<movement>"
    )
    root = parse(journal)
    assert computer_schema().validate(root)
    assert movements_of(root) == [
        {"resource": CPU, "title": "CPU time (user + system), seconds", "reference": "slappart3",
         "quantity": "12.35", "price": "0.00", "VAT": "None", "category": ["unit/second"]},
        {"resource": MEMORY, "title": "Resident memory, bytes", "reference": "slappart3",
         "quantity": "1048576", "price": "0.00", "VAT": "None", "category": ["unit/byte"]},
        {"resource": DISK, "title": "Disk space of the partition, bytes", "reference": "slappart3",
         "quantity": "8192", "price": "0.00", "VAT": "None", "category": ["unit/byte"]},
        {"resource": PROCESSES, "title": "Processes running", "reference": "slappart3",
         "quantity": "3", "price": "0.00", "VAT": "None", "category": ["unit/process"]},
    ]  # fmt: skip


def test_instance_report_reference_is_replaced_by_the_partition_id() -> None:
    document = consumption(
        movement(reference="slappart9", categories=("a", "b")),
        movement("Requests", " 7 ", title="HTTP requests"),
    )
    parsed = parse_consumption(document, "slappart1")
    assert parsed == [
        Movement("Backup size", "42.5", "slappart1", None, categories=("a", "b")),
        Movement("Requests", "7", "slappart1", "HTTP requests"),
    ]
    root = parse(build_journal("COMP-1", parsed, stop_date=STOP))
    assert computer_schema().validate(root)
    assert [m["reference"] for m in movements_of(root)] == ["slappart1", "slappart1"]
    assert movements_of(root)[0]["category"] == ["a", "b"]


def test_instance_reports_merge_with_measurements_in_one_transaction() -> None:
    measured = usage_movements(Usage("slappart0", 1.0, 2, 1, 4096))
    written = parse_consumption(consumption(movement()), "slappart1")
    root = parse(build_journal("COMP-1", [*measured, *written], stop_date=STOP))
    (transaction,) = root.iter("transaction")
    assert [m["reference"] for m in movements_of(transaction)] == ["slappart0"] * 4 + ["slappart1"]
    assert movements_of(transaction)[-1]["resource"] == "Backup size"


def test_hostile_text_is_escaped_in_the_journal() -> None:
    hostile = "</title><movement>&amp; ]]> \"quoted\" 'single' <script>"
    escaped = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    written = parse_consumption(
        consumption(movement(resource=escaped, title=escaped, categories=(escaped,))), "slappart0"
    )
    assert written[0].title == hostile
    journal = build_journal("COMP-<&>", written, stop_date=STOP)
    root = parse(journal)
    assert computer_schema().validate(root)
    (got,) = movements_of(root)
    assert got["resource"] == got["title"] == hostile
    assert got["category"] == [hostile]
    assert root.findtext("transaction/reference") == "COMP-<&>"
    assert "<script>" not in journal and len(list(root.iter("movement"))) == 1


def test_text_xml_cannot_carry_is_refused_not_sent() -> None:
    with pytest.raises(InvalidUsage, match="cannot be written"):
        build_journal("COMP-\x01", usage_movements(Usage("slappart0", 0, 0, 0, 0)), stop_date=STOP)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not xml",
        b"<consumption></consumption>",  # at least one movement
        b"<journal/>",
        consumption(movement(quantity="lots")),
        consumption(movement().replace("<VAT>None</VAT>", "")),
        consumption(movement().replace("<resource>", "<extra/><resource>")),
        b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<consumption>&x;</consumption>",
        b"<consumption>" + movement().encode() * 1 + b"</consumption>" + b" " * (1 << 20),
    ],
    ids=["empty", "garbage", "no-movement", "wrong-root", "quantity", "no-vat", "extra",
         "entity", "too-big"],
)  # fmt: skip
def test_invalid_instance_reports_are_refused(document: bytes) -> None:
    with pytest.raises(InvalidUsage):
        parse_consumption(document, "slappart0")


def test_ready_computer_journals_are_appended_as_transactions() -> None:
    ready = build_journal(
        "COMP-1", parse_consumption(consumption(movement("Eco")), "slappart5"), stop_date=STOP
    )
    measured = usage_movements(Usage("slappart0", 1.0, 2, 1, 4096))
    root = parse(build_journal("COMP-1", measured, stop_date=STOP, journals=[ready]))
    assert computer_schema().validate(root)
    assert len(root.findall("transaction")) == 2
    assert root.findall("transaction")[1].findtext("movement/resource") == "Eco"
    only_ready = parse(build_journal("COMP-1", [], stop_date=STOP, journals=[ready.encode()]))
    assert len(only_ready.findall("transaction")) == 1


def test_invalid_computer_journal_and_empty_journal_are_refused() -> None:
    with pytest.raises(InvalidUsage):
        parse_journal(consumption(movement()))
    with pytest.raises(InvalidUsage, match="usage journal is invalid"):
        build_journal("COMP-1", [], stop_date=STOP)


# report's pure decision: the retention lock (§5.3)
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("delay", "date", "expected"),
    [
        (None, None, (None, False)),  # no lock file: destroy
        ("0", None, (None, False)),
        ("-1", None, (None, False)),
        ("1.5", None, (NOW + 1.5 * 86400, True)),  # first attempt starts the lock
        ("1.5", "1699999999.0", (1699999999.0, False)),  # existing date wins
        (None, "1800000000", (1800000000.0, False)),
    ],
)
def test_retention_decision(
    delay: str | None, date: str | None, expected: tuple[float | None, bool]
) -> None:
    assert retention_decision(delay, date, NOW) == expected


@pytest.mark.parametrize(("delay", "date"), [("ten days", None), ("inf", None), ("1", "nan")])
def test_unreadable_retention_keeps_the_partition(delay: str, date: str | None) -> None:
    with pytest.raises(DestroyError, match="not a number"):
        retention_decision(delay, date, NOW)


# root-only branches, reached without root through an injected environment


def _owned_by_someone_else(path: Path) -> int:
    """`path`'s owner, made a non-root uid first when the tests run as root."""
    if os.geteuid() == 0:
        os.chown(path, 4242, 4242)
    return path.stat().st_uid


def test_processes_are_attributed_by_uid_only_in_root_mode(tmp_path: Path) -> None:
    owner = _owned_by_someone_else(tmp_path)
    assert dedicated_uid(tmp_path, Environment(euid=0)) == owner
    assert dedicated_uid(tmp_path, Environment(euid=owner)) is None  # rootless: the agent's


@pytest.mark.parametrize(("euid", "chowned"), [(0, True), (1000, False)])
def test_retention_lock_starts_on_the_clock_and_is_given_to_the_owner_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, chowned: bool
) -> None:
    chowns: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: chowns.append((str(path), uid, gid)))
    (tmp_path / ".slapos-retention-lock-delay").write_text("2")
    owner = tmp_path.stat()
    clock = [NOW]
    env = Environment(euid=euid, clock=lambda: clock[0])

    assert retention_lock(tmp_path, env) == NOW + 2 * 86400
    date_file = tmp_path / ".slapos-retention-lock-date"
    assert float(date_file.read_text()) == NOW + 2 * 86400
    assert chowns == ([(str(date_file), owner.st_uid, owner.st_gid)] if chowned else [])

    clock[0] = NOW + 2 * 86400 + 1  # two days later, without waiting for them
    assert retention_lock(tmp_path, env) is None
    assert len(chowns) == (1 if chowned else 0)  # the existing date is kept, not rewritten
