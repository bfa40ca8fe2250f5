"""A bounded, seeded fuzz of every endpoint: no 5xx, a refusal commits nothing, and every
computer stays readable.

Each case starts from a well-formed call and mutates it: values swapped for hostile ones,
parameters dropped, repeated or added, a forged requester header. `SLAPGRID_FUZZ_SEED` and
`SLAPGRID_FUZZ_CASES` replay or widen a run; a failure names the seed and the case.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from master_site import dump, served, small_computer
from slapgrid.master import hateoas
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity
from slapgrid.master.routes import ROUTES, Route
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.slap import instance_trees, marshal
from slapgrid.slap.changes import CHANGES_PATH
from slapgrid.slap.client import SlapClient
from slapgrid.slap.registration import REGISTER_PATH
from support.tls import https_client

pytestmark = pytest.mark.integration

COMP = "COMP-FUZZ"
SR = "https://example.com/software/fuzz/software.cfg"
SEED = int(os.environ.get("SLAPGRID_FUZZ_SEED", "20261130"))
CASES = int(os.environ.get("SLAPGRID_FUZZ_CASES", "2000"))
PARTITIONS = 60  # room for the instances the fuzz manages to request


JOURNAL = (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List"><title>t</title>'
    "<start_date></start_date><stop_date></stop_date><reference>COMP-FUZZ</reference>"
    "<currency></currency><payment_mode></payment_mode><category></category>"
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    "<movement><resource>CPU</resource><title>t</title><reference>slappart0</reference>"
    "<quantity>1</quantity><price>0</price><VAT>None</VAT><category>None</category>"
    "</movement></transaction></journal>"
)
PARTITION = {"computer_id": COMP, "computer_partition_id": "slappart0"}
ARCHIVE = "a release archive"
ARCHIVE_SHA512 = hashlib.sha512(ARCHIVE.encode()).hexdigest()
CACHE_KEY = "file-urlmd5:" + hashlib.md5(SR.encode()).hexdigest()
CACHE_ENTRY = json.dumps([json.dumps({"sha512": ARCHIVE_SHA512}), "signature"])
VALID: dict[str, dict[str, str]] = {
    "getFullComputerInformation": {"computer_id": COMP},
    "getComputerInformation": {"computer_id": COMP},
    CHANGES_PATH: {"computer_id": COMP, "since": "0", "timeout": "0"},
    "registerComputerPartition": {
        "computer_reference": COMP,
        "computer_partition_reference": "slappart0",
    },
    "getComputerPartitionCertificate": PARTITION,
    "getHostingSubscriptionIpList": PARTITION,
    "getComputerStatus": {"computer_id": COMP},
    "getComputerPartitionStatus": PARTITION,
    "getSoftwareInstallationStatus": {"computer_id": COMP, "url": SR},
    "getHateoasUrl": {},
    hateoas.PATH: {"mode": "search", "query": hateoas.SERVICE_INFO + '"root"'},
    instance_trees.LIST_PATH: {"portal_type": "Instance Tree"},
    instance_trees.GET_PATH: {"title": "root"},
    "buildingSoftwareRelease": {"url": SR, "computer_id": COMP},
    "availableSoftwareRelease": {"url": SR, "computer_id": COMP},
    "destroyedSoftwareRelease": {"url": SR, "computer_id": COMP},
    "softwareReleaseError": {"url": SR, "computer_id": COMP, "error_log": "boom"},
    "startedComputerPartition": PARTITION,
    "stoppedComputerPartition": PARTITION,
    "softwareInstanceError": {**PARTITION, "error_log": "boom"},
    "destroyedComputerPartition": PARTITION,
    "softwareInstanceBang": {**PARTITION, "message": "bang"},
    "computerBang": {"computer_id": COMP, "message": "bang"},
    "useComputer": {"computer_id": COMP, "use_string": JOURNAL},
    "requestComputerPartition": {
        "software_release": SR,
        "software_type": "default",
        "partition_reference": "child",
        "partition_parameter_xml": dump({"a": "1"}),
        "filter_xml": dump({}),
        "state": dump(None),
        "shared_xml": dump(False),
        **PARTITION,
    },
    "softwareInstanceRename": {**PARTITION, "new_name": "renamed"},
    "setComputerPartitionConnectionXml": {**PARTITION, "connection_xml": dump({"url": "x"})},
    "updateComputerPartitionRelatedInstanceList": {
        **PARTITION,
        "instance_reference_xml": dump(["child"]),
    },
    "supplySupply": {"url": SR, "computer_id": COMP, "state": "available"},
    "loadComputerConfigurationFromXML": {"xml": dump(small_computer(COMP, PARTITIONS))},
    REGISTER_PATH: {"title": COMP},
    # the networkcache: "METHOD path", path parameters by name, the body as "content"
    "POST shacache": {"content": ARCHIVE},
    "PUT shacache/{sha512}": {"sha512": ARCHIVE_SHA512, "content": ARCHIVE},
    "GET shacache/{sha512}": {"sha512": ARCHIVE_SHA512},
    "PUT shadir/{key}": {"key": CACHE_KEY, "content": CACHE_ENTRY},
    "GET shadir/{key}": {"key": CACHE_KEY},
}
HOSTILE: list[str] = [
    "",
    "None",
    "none",
    "0",
    "-1",
    "1e309",
    "nan",
    "\x00",
    "a\x01b",
    "\x1b[31mred\x1b[0m",
    "\ufffe",
    "é\u202e",
    "..",
    "../etc",
    "/etc/passwd",
    "etc",
    "a\nb",
    "x" * 5000,
    "${buildout:directory}",
    "slappart1",
    "slappart99",
    "COMP-OTHER",
    SR,
    "http://",
    "ftp://example.com/x",
    "https://example.com/a b",
    "<marshal><bool>2</bool></marshal>",
    "<marshal><int>99999999999999999999999999</int></marshal>",
    "<marshal><dict><string>k</string></dict></marshal>",
    "<marshal>" * 200,
    "<?xml version='1.0'?><!DOCTYPE m [<!ENTITY a 'b'>]><marshal><string>&a;</string></marshal>",
    "<x/>",
    dump(None),
    dump(True),
    dump(3),
    dump("started"),
    dump("destroyed"),
    dump([1, "2", None]),
    dump({"a": {"b": [1, 2.5]}}),
    dump({"computer_guid": "COMP-OTHER"}),
    dump({"reference": COMP, "partition_list": [{"reference": ".."}]}),
    dump(small_computer(COMP, 1)),
    dump(small_computer("COMP-NEW", 2)),
    "<journal/>",
    JOURNAL.replace("slappart0", "\ue000"),
]
TAINTS = [
    "\x00",
    "\x01",
    "\x08",
    "\x0b",
    "\x1b[31m",
    "\x7f",
    "\ufffe",
    "\uffff",
    "\u202e",
    "\n",
    "\t",
]
NAMES = sorted({name for params in VALID.values() for name in params} | {"extra", "xml"})


def mutate(rng: random.Random, path: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    params = list(VALID[path].items())
    headers: dict[str, str] = {}
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
        roll = rng.random()
        if roll < 0.4 and params:
            index = rng.randrange(len(params))
            params[index] = (params[index][0], rng.choice(HOSTILE))
        elif roll < 0.65 and params:  # a well-formed value with one bad character in it
            index = rng.randrange(len(params))
            name, value = params[index]
            cut = rng.randint(0, len(value))
            params[index] = (name, value[:cut] + rng.choice(TAINTS) + value[cut:])
        elif roll < 0.75 and params:
            params.pop(rng.randrange(len(params)))
        elif roll < 0.85 and params:
            params.append((rng.choice(params)[0], rng.choice(HOSTILE)))
        elif roll < 0.92:
            params.append((rng.choice(NAMES), rng.choice(HOSTILE)))
        else:
            who = rng.choice(["slappart1", "slappart99", "\x01", ""])
            headers["Authorization"] = (
                f"X-SlapPartition computer_id={COMP}, computer_partition_id={who}"
            )
    if path == CHANGES_PATH:  # a long poll must not hold the run: waits stay short
        params = [(k, "0" if k == "timeout" and _long(v) else v) for k, v in params]
    return params, headers


def _long(value: str) -> bool:
    try:
        return float(value) > 0.5
    except ValueError:
        return False


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    with served(tmp_path, COMP, pki=True, database=database) as server:
        with SlapClient(server.url, COMP) as node:
            node.load_computer_configuration(small_computer(COMP, PARTITIONS))
            node.supply(SR)
            node.request(SR, "root")
        yield server


@pytest.fixture
def tls_master(tmp_path: Path, database: str) -> Iterator[tuple[MasterServer, list[httpx.Client]]]:
    """A TLS master, and callers of every kind: its computer, a partition, a user, another
    computer and nobody."""
    store = MasterStore(database, default_computer=COMP)
    authority = Authority.open(tmp_path / "pki")
    store.load_computer_configuration(small_computer(COMP, PARTITIONS))
    store.supply(COMP, SR)
    store.request(InstanceRequest(SR, "root", owner="fuzzer"))
    identities = [
        Identity.for_computer(COMP),
        Identity.for_partition(COMP, "slappart0"),
        Identity.for_user("fuzzer"),
        Identity.for_computer("COMP-OTHER"),
        None,
    ]
    with MasterServer(store, authority=authority) as server:
        clients = [https_client(server.url, authority, who, store=store) for who in identities]
        try:
            yield server, clients
        finally:
            for client in clients:
                client.close()
    store.close()


def test_fuzz_every_endpoint(master: MasterServer) -> None:
    with httpx.Client(base_url=master.url, timeout=30) as client:
        fuzz(master, [client], CASES)


def test_fuzz_every_endpoint_as_every_caller(
    tls_master: tuple[MasterServer, list[httpx.Client]],
) -> None:
    """Over TLS, each case made by a caller drawn at random: refusals (403) commit nothing."""
    fuzz(*tls_master, CASES // 2)


def fuzz(master: MasterServer, clients: list[httpx.Client], cases: int) -> None:
    rng = random.Random(SEED)
    table = {_name(route): route for route in ROUTES}
    routes = {name: route.method for name, route in table.items()}
    json_calls = {name for name, route in table.items() if route.body == "json"}
    assert set(routes) == set(VALID), "every route has a well-formed call to start from"
    before = master.store.snapshot()
    statuses: dict[int, int] = {}
    for case in range(cases):
        path = rng.choice(sorted(routes))
        params, headers = mutate(rng, path)
        who = rng.randrange(len(clients))
        client = clients[who]
        where = (
            f"seed {SEED}, case {case}, caller {who}: {routes[path]} /{path} {params!r} {headers!r}"
        )
        if table[path].body == "raw" or "{" in path:
            reply = _cache_call(client, table[path], params, headers)
        elif routes[path] == "GET":
            reply = client.get(path, params=params, headers=headers)
        elif path in json_calls:
            reply = client.post(path, json=dict(params), headers=headers)
        else:
            reply = client.post(path, data=_form(params), headers=headers)
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        assert reply.status_code < 500, f"{where} → {reply.status_code} {reply.text}"
        after = master.store.snapshot()
        if reply.status_code >= 400:
            assert after == before, f"{where}: refused ({reply.status_code}) but committed"
        before = after
    # the fuzz reaches past the checks (a header with a control character never does: the
    # parser refuses it, as RFC 9110 says, before any check)
    assert statuses.get(200, 0) > cases // 25, statuses
    for computer in (row["reference"] for row in before["computers"]):  # each answers its node
        reply = clients[0].get("getFullComputerInformation", params={"computer_id": computer})
        assert reply.status_code in ((200, 403) if len(clients) > 1 else (200,)), reply.text
        if computer == COMP:
            assert reply.status_code == 200 and marshal.loads(reply.content) is not None


def _name(route: Route) -> str:
    """A route's name in VALID: its path, or "METHOD path" for the networkcache's, whose
    paths are shared by a GET and a PUT."""
    return f"{route.method} {route.path}" if route.path.startswith("sha") else route.path


def _cache_call(
    client: httpx.Client, route: Route, params: list[tuple[str, str]], headers: dict[str, str]
) -> httpx.Response:
    """A networkcache call: path parameters (the first of each name) in the path, quoted;
    "content" the body; the rest the query string."""
    named = {name: "" for name in ("sha512", "key") if f"{{{name}}}" in route.path}
    query, content = [], b""
    for name, value in params:
        if name in named and not named[name]:
            named[name] = quote(value, safe="")
        elif name == "content" and route.method != "GET":
            content = value.encode()
        else:
            query.append((name, value))
    path = route.path.format_map(named)
    if route.method == "GET":
        return client.get(path, params=query, headers=headers)
    return client.request(route.method, path, params=query, content=content, headers=headers)


def _form(params: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The form httpx sends: a field given twice is a list."""
    form: dict[str, list[str]] = {}
    for name, value in params:
        form.setdefault(name, []).append(value)
    return form
