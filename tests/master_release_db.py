"""A master database written by one release, and what that release answered from it.

`python tests/master_release_db.py OUT_DIR` runs a scenario with whichever slapgrid it imports
(a release's: `PYTHONPATH=/tmp/prev/src`), then writes OUT_DIR/master.sql (the SQLite
database as SQL text) and OUT_DIR/answers.json (every read, at a fixed time). A later
release opens the database and must answer the same (tests/unit/test_master_migrations.py).

Made with the previous release, the one before migrations:
    git worktree add /tmp/prev 5cf8421
    PYTHONPATH=/tmp/prev/src .venv/bin/python tests/master_release_db.py \\
        tests/unit/data/release-5cf8421
    git worktree remove /tmp/prev
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from itertools import count
from pathlib import Path
from typing import Any

from slapgrid.master import stamps
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.slap import marshal

START_US = 1_795_000_000_000_000  # the scenario's clock: 2026-11-18, one ms a reading
READ_AT_US = START_US + 3_600_000_000  # the reads: an hour later
COMPUTERS = ("COMP-A", "COMP-B")
SR = "https://example.com/app/software.cfg"
SR_FRONT = "https://example.com/front/software.cfg"
OWNER = "alice"
USAGE = (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
    "<title>Resource consumptions</title><start_date></start_date>"
    "<stop_date>2026-11-18 at 10:00:00</stop_date><reference>COMP-A</reference>"
    "<currency></currency><payment_mode></payment_mode><category></category>"
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    "<movement><resource>CPU Consumption</resource><title>t</title>"
    "<reference>slappart0</reference><quantity>4.2</quantity><price>0.00</price>"
    "<VAT>None</VAT><category>None</category></movement></transaction></journal>"
)


class _Clock:
    """Stands for the `time` module of `stamps`: the master's only clock."""

    def __init__(self, start_us: int, step_us: int) -> None:
        self._ticks = count(start_us, step_us) if step_us else None
        self._fixed = start_us

    def time_ns(self) -> int:
        return (next(self._ticks) if self._ticks else self._fixed) * 1000


@contextmanager
def clock(start_us: int, step_us: int = 0) -> Iterator[None]:
    """The master's clock at `start_us`, moving `step_us` at each reading (0: stopped)."""
    saved = stamps.time
    stamps.time = _Clock(start_us, step_us)  # type: ignore[assignment]
    try:
        yield
    finally:
        stamps.time = saved


def computer(reference: str, partitions: int) -> dict[str, Any]:
    return {
        "reference": reference,
        "address": "192.0.2.1",
        "netmask": "255.255.255.0",
        "partition_list": [
            {
                "reference": f"slappart{i}",
                "address_list": [
                    {"addr": f"10.0.{len(reference)}.{i + 1}", "netmask": "255.255.255.0"},
                    {"addr": f"fd00::{i + 1}", "netmask": "ffff::"},
                ],
                "tap": {"name": f"slaptap{i}"},
            }
            for i in range(partitions)
        ],
    }


def scenario(store: MasterStore) -> None:
    """What a master goes through: format, supply, requests (a child, a shared instance, a
    user's tree), connections, statuses, usage, bangs, a destruction, a registration token."""
    comp_a, comp_b = COMPUTERS
    store.load_computer_configuration(computer(comp_a, 4))
    store.load_computer_configuration(computer(comp_b, 2))
    for reference in COMPUTERS:
        store.supply(reference, SR)
    store.supply(comp_a, SR_FRONT)
    store.report_software(comp_a, SR, "building")
    store.report_software(comp_a, SR, "available")
    store.report_software(comp_b, SR, "error", "compilation failed")

    def request(title: str, **kwargs: Any) -> dict[str, Any]:
        sr = kwargs.pop("sr", SR)
        kwargs.setdefault("filter", {"computer_guid": comp_a})
        return store.request(InstanceRequest(sr, title, **kwargs))

    root = request("root", parameters={"size": "2"})
    request("child", requester=(comp_a, root["slap_computer_partition_id"]))
    request("frontend", sr=SR_FRONT)  # hosts the shared instance below
    request(
        "front",
        sr=SR_FRONT,
        shared=True,
        parameters={"url": "https://root.example"},
        requester=(comp_a, root["slap_computer_partition_id"]),
    )
    mine = request("mine", owner=OWNER, filter={"computer_guid": comp_b})
    request("gone", filter={"computer_guid": comp_b})
    request("gone", filter={"computer_guid": comp_b}, state="destroyed")

    root_pid = root["slap_computer_partition_id"]
    store.set_connection(comp_a, root_pid, {"url": "https://root.example"})
    store.report_partition(comp_a, root_pid, "started")
    store.report_partition(comp_a, "slappart1", "error", "promise failed")
    store.report_partition(comp_b, mine["slap_computer_partition_id"], "stopped")
    store.use_computer(comp_a, USAGE)
    store.bang(comp_a, root_pid, "service died")
    store.computer_bang(comp_b, "rebooted")
    store.note_contact(comp_a, stamps.now_us())
    store.write_contacts()
    token_of(store, comp_b)


def token_of(store: MasterStore, reference: str) -> None:
    """A registration token for a computer, where the release has them."""
    try:
        from slapgrid.master import credentials
    except ImportError:
        return
    credentials.create_token(store, reference, now=stamps.now_us())


def answers(store: MasterStore) -> dict[str, Any]:
    """Every read the master answers from its database, as JSON-ready data."""
    snapshot = store.snapshot()
    partitions = [(p["computer"], p["partition"]) for p in snapshot["partitions"]]
    software = [(s["computer"], s["url"]) for s in snapshot["software"]]
    roots = sorted({p["root"] for p in snapshot["partitions"] if p["root"]})
    result: dict[str, Any] = {
        "snapshot": snapshot,
        "instance_trees": store.instance_trees(),
        "instance_trees_of_owner": store.instance_trees(OWNER),
        "instance_tree": {title: store.instance_tree(title) for title in roots},
    }
    for reference in COMPUTERS:
        generation, document = store.computer_document(reference)
        result[f"computer_document {reference}"] = {
            "generation": generation,
            "xml": marshal.dumps(document.to_wire()).decode(),
        }
        result[f"computer_status {reference}"] = store.computer_status(reference)
        result[f"usage_reports {reference}"] = store.usage_reports(reference)
        result[f"computer_bangs {reference}"] = store.computer_bangs(reference)
    for reference, pid in partitions:
        result[f"partition_status {reference} {pid}"] = store.partition_status(reference, pid)
    for reference, url in software:
        result[f"software_status {reference} {url}"] = store.software_status(reference, url)
    return json.loads(json.dumps(result, default=list))  # tuples as JSON has them: lists


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "master.db"
        with clock(START_US, step_us=1000):
            store = MasterStore(path, default_computer=COMPUTERS[0])
            scenario(store)
        with clock(READ_AT_US):
            read = answers(store)
        store.close()
        with closing(sqlite3.connect(path)) as connection:
            dump = "\n".join(connection.iterdump()) + "\n"
    (out / "master.sql").write_text(dump)
    (out / "answers.json").write_text(json.dumps(read, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
