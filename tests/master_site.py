"""The embedded master in tests: a formatted computer, requests, an instance tree, a server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from slapgrid.master.pki.authority import Authority
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.slap import marshal
from slapgrid.slap.documents import Computer, ComputerPartition
from support.waiting import wait_for

COMP = "COMP-1"
SR_A = "https://example.com/a/software.cfg"
SR_B = "https://example.com/b/software.cfg"
JOURNAL = (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
    "<title>Resource consumptions</title><start_date></start_date>"
    "<stop_date>2026-11-24 at 15:03:21</stop_date><reference>COMP-1</reference>"
    "<currency></currency><payment_mode></payment_mode><category></category>"
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    "<movement><resource>CPU Consumption</resource><title>t</title>"
    "<reference>slappart0</reference><quantity>42.42</quantity><price>0.00</price>"
    "<VAT>None</VAT><category>None</category></movement></transaction></journal>"
)


def format_definition(count: int = 6, **overrides: Any) -> dict[str, Any]:
    partitions = [
        {
            "reference": f"slappart{i}",
            "address_list": [
                {"addr": f"10.0.0.{i + 1}", "netmask": "255.255.255.0"},
                {"addr": f"fd00::{i + 1}", "netmask": "ffff::"},
            ],
            "tap": {
                "name": f"slaptap{i}",
                "ipv4_addr": f"10.8.0.{i + 1}",
                "ipv4_gateway": "10.8.0.254",
                "ipv4_netmask": "255.255.255.0",
                "ipv4_network": "10.8.0.0",
            },
        }
        for i in range(count)
    ]
    return {"reference": COMP, "address": "192.0.2.1", "netmask": "255.255.255.0"} | {
        "partition_list": partitions,
        **overrides,
    }


@contextmanager
def formatted_store(database: str | Path) -> Iterator[MasterStore]:
    """A store with a formatted computer of six partitions and SR_A supplied."""
    master = MasterStore(database, default_computer=COMP)
    master.load_computer_configuration(format_definition())
    master.supply(COMP, SR_A)
    yield master
    master.close()


def request(store: MasterStore, title: str, **kwargs: Any) -> dict[str, Any]:
    return store.request(InstanceRequest(kwargs.pop("sr", SR_A), title, **kwargs))


def stamps(store: MasterStore) -> dict[str, int]:
    return {
        p["partition"]: p["timestamp"]
        for p in store.snapshot()["partitions"]
        if p["slap_state"] == "busy"
    }


def build_tree(store: MasterStore) -> MasterStore:
    """root(0) → child(1) → grandchild(2); other(3) alone; shared `front` of child on root."""
    request(store, "root", parameters={"a": "1"})
    request(store, "child", requester=(COMP, "slappart0"))
    request(store, "grandchild", sr=SR_B, requester=(COMP, "slappart1"))
    request(store, "other")
    request(store, "front", shared=True, parameters={"url": "x"}, requester=(COMP, "slappart1"))
    return store


def as_front(**kwargs: Any) -> Callable[[MasterStore], Any]:
    """(Re-)request the shared instance `front` of the tree, with these changes."""
    defaults = {"parameters": {"url": "x"}, "shared": True, "requester": (COMP, "slappart1")}
    return lambda s: request(s, "front", **{**defaults, **kwargs})


def front_guid(store: MasterStore) -> str:
    return next(s["guid"] for s in store.snapshot()["shared"] if s["title"] == "front")


def small_computer(reference: str, count: int) -> dict[str, Any]:
    """A computer of `count` partitions, one IPv4 address and one tap each."""
    return {
        "reference": reference,
        "address": "10.0.0.1",
        "netmask": "255.255.255.0",
        "partition_list": [
            {
                "reference": f"slappart{i}",
                "address_list": [{"addr": f"10.0.1.{i + 1}", "netmask": "255.255.255.0"}],
                "tap": {"name": f"slaptap{i}"},
            }
            for i in range(count)
        ],
    }


@contextmanager
def served(
    tmp_path: Path, computer: str, *, pki: bool = False, database: str | None = None
) -> Iterator[MasterServer]:
    """A master over HTTP on 127.0.0.1, its files in `tmp_path` (its CA in `pki/`), its
    database there too unless `database` says where."""
    store = MasterStore(database or tmp_path / "master.db", default_computer=computer)
    authority = Authority.open(tmp_path / "pki") if pki else None
    with MasterServer(
        store, authority=authority, insecure=True, cache_dir=tmp_path / "cache"
    ) as server:
        yield server
    store.close()


def partition(computer: Computer, pid: str) -> ComputerPartition:
    return next(p for p in computer.partitions if p.partition_id == pid)


def get(master: MasterServer, endpoint: str, **params: str) -> httpx.Response:
    return httpx.get(master.url + endpoint, params=params)


def post(master: MasterServer, endpoint: str, **form: str) -> httpx.Response:
    return httpx.post(master.url + endpoint, data=form)


def dump(value: Any) -> str:
    """A value as a SLAP form field carries it (xml_marshaller)."""
    return marshal.dumps(value).decode()


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until the master `process` serves `url`; its error output if it dies first."""

    def answers() -> bool:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            # readiness only: any answer, from any certificate, will do
            httpx.get(url + "getHateoasUrl", timeout=1, verify=False)
        except httpx.TransportError:
            return False
        return True

    wait_for(answers, 20, what="the master to start")
