"""Who may make which call of a TLS master: every route of the table, with certificates made
here, refused for every caller it must refuse, and a refused call changes nothing.

One master serves HTTPS over a SQLite store for the whole module:

    COMP-A  slappart0  alice-root   user alice's root (requested with her certificate)
            slappart1  alice-child  requested by slappart0 (with its certificate)
            slappart2  bob-on-a     user bob's root, on alice's computer
            slappart0 also hosts alice-front, alice's shared root instance
    COMP-B  slappart0  bob-root     user bob's root

Every route (`routes.ROUTES`) has a row: the call, who makes it and is answered, and who is
refused 403 making the very same call (another computer, another partition of the same
tree or of another tree, a partition acting as its computer, a user on a node's call, a node
on a user's call, no certificate); other refused calls name what is not the caller's (a
computer id not the certificate's, another user's instance, a shared instance the partition
does not host, another computer's registration token).
The certificate of the allowed caller issued by another CA, or by this CA but expired, does
not get through the TLS handshake. After each refusal, a full dump of the master's database
(`store.snapshot()` and every row of every table: tokens, credentials, owners, bangs,
usage reports) is what it was before.

The allowed calls change only what no other case depends on (a rename to the same name, a
re-request with the same parameters, ...), so the cases pass in any order (`-p randomly`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from master_site import dump, small_computer
from slapgrid.master import credentials
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import PARTITION, Identity, IdentityError
from slapgrid.master.routes import ROUTES, Route
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import MasterStore
from slapgrid.master.tables import Base
from slapgrid.slap import marshal
from slapgrid.slap.changes import CHANGES_PATH
from slapgrid.slap.instance_trees import GET_PATH, LIST_PATH
from slapgrid.slap.registration import REGISTER_PATH
from support.tls import client_context, credential_files, partition_files

pytestmark = pytest.mark.integration

A, B = "COMP-A", "COMP-B"
SR_A = "https://example.com/software/a/software.cfg"
SR_B = "https://example.com/software/b/software.cfg"
SR_GONE = "https://example.com/software/gone/software.cfg"  # supplied "destroyed" on A
SR_NEW = "https://example.com/software/new/software.cfg"
NEW_COMPUTER = "COMP-NEW"  # registers with its token
CACHED = b"a release archive in the master's networkcache\n" * 100  # uploaded by COMP-A
CACHED_SHA512 = hashlib.sha512(CACHED).hexdigest()
CACHE_KEY = "file-urlmd5:" + hashlib.md5(b"https://example.com/a.tar.gz").hexdigest()
CACHE_UPLOAD = {
    "key": CACHE_KEY,
    "content": json.dumps([json.dumps({"sha512": CACHED_SHA512}), "signature"]),
}

IDENTITIES = {
    "comp-a": Identity.for_computer(A),
    "comp-b": Identity.for_computer(B),
    "part-a0": Identity.for_partition(A, "slappart0"),
    "part-a1": Identity.for_partition(A, "slappart1"),
    "part-a2": Identity.for_partition(A, "slappart2"),  # bob's, on alice's computer
    "part-b0": Identity.for_partition(B, "slappart0"),
    "alice": Identity.for_user("alice"),
    "bob": Identity.for_user("bob"),
    "anonymous": None,
}
FOREIGN, EXPIRED = "another CA's", "expired"
LONG_AGO = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=11 * 365)


@dataclass(frozen=True)
class Ref:
    """A value known once the site is set up (a token, a shared instance's guid)."""

    name: str


def request_form(title: str, sr: str = SR_A, **fields: Any) -> dict[str, Any]:
    """A requestComputerPartition form (the SLAP client's fields)."""
    return {
        "software_release": sr,
        "software_type": "default",
        "partition_reference": title,
        "partition_parameter_xml": dump(fields.pop("parameters", {})),
        "filter_xml": dump(fields.pop("filter", {})),
        "state": dump(fields.pop("state", None)),
        "shared_xml": dump(fields.pop("shared", False)),
        **fields,
    }


# --- the site ------------------------------------------------------------------------------


@dataclass
class Site:
    server: MasterServer
    store: MasterStore
    authority: Authority
    other: Authority  # another CA
    past: Authority  # this CA, eleven years ago
    directory: Path  # where the callers' certificates are
    refs: dict[str, str] = field(default_factory=dict)
    clients: dict[tuple[str, str, str], httpx.Client] = field(default_factory=dict)
    files: dict[tuple[str, str], tuple[Path, Path]] = field(default_factory=dict)

    def client(self, caller: str, variant: str = "", tls: str = "") -> httpx.Client:
        """An HTTPS client presenting `caller`'s certificate (`variant`: of another CA, or
        expired), made once; `tls="1.2"` caps its TLS version."""
        key = (caller, variant, tls)
        if key not in self.clients:
            context = client_context(self.authority.ca_file, *self.credentials(caller, variant))
            if tls:
                context.maximum_version = ssl.TLSVersion.TLSv1_2
            self.clients[key] = httpx.Client(base_url=self.server.url, verify=context, timeout=30)
        return self.clients[key]

    def credentials(self, caller: str, variant: str = "") -> tuple[Path, Path] | tuple[()]:
        """(key, certificate) files of `caller` (none: anonymous), issued once."""
        identity = IDENTITIES[caller]
        if identity is None:
            return ()
        if (caller, variant) not in self.files:
            issuer = {"": self.authority, FOREIGN: self.other, EXPIRED: self.past}[variant]
            directory = self.directory / (variant or "ours")
            if identity.kind == PARTITION and not variant:  # the master's, for its instance
                made = partition_files(self.store, self.authority, identity, directory)
            else:
                made = credential_files(issuer, identity, directory)
            self.files[caller, variant] = made
        return self.files[caller, variant]

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self.refs[v.name] if isinstance(v, Ref) else v for k, v in values.items()}

    def call(
        self,
        caller: str,
        method: str,
        path: str,
        params: dict[str, Any],
        headers: dict[str, Any] | None = None,
        variant: str = "",
        tls: str = "",
    ) -> httpx.Response:
        client, route = self.client(caller, variant, tls), route_of(method, path)
        params, headers = self.resolve(params), self.resolve(headers or {})
        if "{" in path:  # the networkcache's: what the path names is in the path
            named = {k for k in params if f"{{{k}}}" in path}
            path = path.format_map(params)
            params = {k: v for k, v in params.items() if k not in named}
        if route.body == "raw":  # an upload: its content is the body
            return client.request(method, path, content=params["content"], headers=headers)
        if method == "GET":
            return client.get(path, params=params, headers=headers)
        if route.body == "json":
            return client.post(path, json=params, headers=headers)
        return client.post(path, data=params, headers=headers)


def route_of(method: str, path: str) -> Route:
    return next(r for r in ROUTES if (r.method, r.path) == (method, path))


def full_dump(store: MasterStore) -> dict[str, Any]:
    """Everything the master keeps: its snapshot, and every row of every table."""
    store.write_contacts()  # contacts noted by earlier answers: written now, not meanwhile

    def tables(session: Any) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }

    return {"snapshot": store.snapshot(), "tables": store.read_with(tables)}


def cache_dump(site: Site) -> dict[str, bytes]:
    """Every file of the master's networkcache, with its content."""
    assert site.server.cache is not None
    root = site.server.cache.directory
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, module_database: str) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("authz")
    authority = Authority.open(directory / "pki")
    store = MasterStore(module_database)
    store.load_computer_configuration(small_computer(A, 6))
    store.load_computer_configuration(small_computer(B, 4))
    store.supply(A, SR_A)
    store.supply(A, SR_GONE, "destroyed")
    store.supply(B, SR_B)
    with MasterServer(store, authority=authority, cache_dir=directory / "cache") as server:
        site = Site(
            server,
            store,
            authority,
            Authority.open(directory / "other-pki"),
            Authority.open(directory / "pki", clock=lambda: LONG_AGO),
            directory / "callers",
        )
        on_a, on_b = {"filter": {"computer_guid": A}}, {"filter": {"computer_guid": B}}
        for caller, form in (  # each as its certificate says: owners and requesters set
            ("alice", request_form("alice-root", parameters={"p": "1"}, **on_a)),
            ("part-a0", request_form("alice-child", **on_a)),
            ("alice", request_form("alice-front", shared=True, **on_a)),
            ("bob", request_form("bob-root", SR_B, **on_b)),
            ("bob", request_form("bob-on-a", **on_a)),
        ):
            answer = site.call(caller, "POST", "requestComputerPartition", form)
            assert answer.status_code == 200, answer.text
        site.refs["front"] = next(
            s["guid"] for s in store.snapshot()["shared"] if s["title"] == "alice-front"
        )
        site.refs["token-new"] = credentials.create_token(store, NEW_COMPUTER)
        site.refs["token-b"] = credentials.create_token(store, B)
        for caller in IDENTITIES:  # issued now, as a node fetches them: not during a check
            site.credentials(caller)
        shared = site.call("comp-a", "POST", "shacache", {"content": CACHED})
        assert shared.status_code == 201, shared.text
        indexed = site.call("comp-a", "PUT", "shadir/{key}", CACHE_UPLOAD)
        assert indexed.status_code == 201, indexed.text
        try:
            yield site
        finally:
            for client in site.clients.values():
                client.close()
    store.close()


def test_the_site_is_as_described(site: Site) -> None:
    rows = partition_rows(site)
    assert rows["/alice-root"] == (A, "slappart0", "alice-root", (None, None), "alice")
    assert rows["alice-root/alice-child"] == (
        A,
        "slappart1",
        "alice-root",
        (A, "slappart0"),
        None,
    )
    assert rows["/bob-root"] == (B, "slappart0", "bob-root", (None, None), "bob")
    assert rows["/bob-on-a"] == (A, "slappart2", "bob-on-a", (None, None), "bob")
    [front] = [s for s in site.store.snapshot()["shared"] if s["title"] == "alice-front"]
    assert (front["root"], front["host"]) == ("alice-front", f"{A}/slappart0")


# --- the table: every route, who is answered, who is refused --------------------------------

COMPUTER_A = {"computer_id": A}
PARTITION_A0 = {"computer_id": A, "computer_partition_id": "slappart0"}
PARTITION_A1 = {"computer_id": A, "computer_partition_id": "slappart1"}
JOURNAL = (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
    "<title>Resource consumptions</title><start_date></start_date>"
    "<stop_date>2026-11-24 at 15:03:21</stop_date><reference>COMP-A</reference>"
    "<currency></currency><payment_mode></payment_mode><category></category>"
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    "<movement><resource>CPU Consumption</resource><title>t</title>"
    "<reference>slappart0</reference><quantity>1.0</quantity><price>0.00</price>"
    "<VAT>None</VAT><category>None</category></movement></transaction></journal>"
)

# who, besides a caller without certificate, is refused on a call about COMP-A's node / one
# of its partitions (slappart1) / a user's call
NOT_COMPUTER_A = ("comp-b", "part-a0", "alice")  # other computer, its partition, a user
NOT_PARTITION_A1 = ("part-a0", "part-a2", "part-b0", "comp-b", "alice", "bob")
NOT_PARTITION_A0 = ("part-a1", "part-a2", "part-b0", "comp-b", "alice")
NOT_A_USER = ("comp-a", "part-a0")


@dataclass(frozen=True)
class Row:
    """One route: its call, who is answered (and with which status), who is refused 403."""

    method: str
    path: str
    params: dict[str, Any]
    allowed: tuple[tuple[str, int], ...]
    refused: tuple[str, ...]
    headers: dict[str, Any] = field(default_factory=dict)


ROWS: list[Row] = [
    # what nodes read
    Row("GET", "getFullComputerInformation", COMPUTER_A, (("comp-a", 200),), NOT_COMPUTER_A),
    Row("GET", "getComputerInformation", COMPUTER_A, (("comp-a", 200),), NOT_COMPUTER_A),
    Row(
        "GET",
        CHANGES_PATH,
        {**COMPUTER_A, "since": "-1", "timeout": "0"},
        (("comp-a", 200),),
        NOT_COMPUTER_A,
    ),
    Row(
        "GET",
        "registerComputerPartition",
        {"computer_reference": A, "computer_partition_reference": "slappart0"},
        (("part-a0", 200), ("comp-a", 200)),
        NOT_PARTITION_A0,
    ),
    Row(
        "GET",
        "getComputerPartitionCertificate",
        PARTITION_A0,
        (("part-a0", 200), ("comp-a", 200)),
        NOT_PARTITION_A0,
    ),
    Row(
        "GET",
        "getHostingSubscriptionIpList",
        PARTITION_A0,
        (("part-a0", 200), ("comp-a", 200)),
        NOT_PARTITION_A0,
    ),
    Row(
        "GET",
        "getComputerPartitionStatus",
        PARTITION_A0,
        (("part-a0", 200), ("comp-a", 200)),
        NOT_PARTITION_A0,
    ),
    # what users read
    Row(
        "GET",
        "getComputerStatus",
        COMPUTER_A,
        (("alice", 200), ("bob", 200), ("comp-a", 200)),
        ("comp-b", "part-a0"),
    ),
    Row(
        "GET",
        "getSoftwareInstallationStatus",
        {**COMPUTER_A, "url": SR_A},
        (("alice", 200), ("comp-a", 200)),
        ("comp-b", "part-a0"),
    ),
    Row("GET", "getHateoasUrl", {}, (("alice", 200),), NOT_A_USER),
    Row(
        "GET",
        "hateoas",
        {"mode": "traverse", "relative_url": "instance_tree/alice-root"},
        (("alice", 200),),
        NOT_A_USER,
    ),
    Row("POST", LIST_PATH, {}, (("alice", 200), ("bob", 200)), NOT_A_USER),
    Row("POST", GET_PATH, {"title": "alice-root"}, (("alice", 200),), NOT_A_USER),
    # what nodes report
    *(
        Row("POST", path, {**COMPUTER_A, "url": SR_A}, (("comp-a", 200),), NOT_COMPUTER_A)
        for path in ("buildingSoftwareRelease", "availableSoftwareRelease", "softwareReleaseError")
    ),
    Row(
        "POST",
        "destroyedSoftwareRelease",
        {**COMPUTER_A, "url": SR_GONE},
        (("comp-a", 200),),
        NOT_COMPUTER_A,
    ),
    *(
        Row("POST", path, PARTITION_A1, (("part-a1", 200), ("comp-a", 200)), NOT_PARTITION_A1)
        for path in ("startedComputerPartition", "stoppedComputerPartition")
    ),
    Row(
        "POST",
        "softwareInstanceError",
        {**PARTITION_A1, "error_log": "boom"},
        (("part-a1", 200),),
        NOT_PARTITION_A1,
    ),
    Row(  # slappart5 is free: nothing to do, "OK"
        "POST",
        "destroyedComputerPartition",
        {**COMPUTER_A, "computer_partition_id": "slappart5"},
        (("comp-a", 200),),
        (*NOT_COMPUTER_A, "part-a1"),
    ),
    Row(
        "POST",
        "softwareInstanceBang",
        {**PARTITION_A1, "message": "again"},
        (("part-a1", 200),),
        NOT_PARTITION_A1,
    ),
    Row(
        "POST",
        "computerBang",
        {**COMPUTER_A, "message": "reboot"},
        (("comp-a", 200),),
        NOT_COMPUTER_A,
    ),
    Row(
        "POST",
        "useComputer",
        {**COMPUTER_A, "use_string": JOURNAL},
        (("comp-a", 200),),
        NOT_COMPUTER_A,
    ),
    Row(
        "POST",
        "loadComputerConfigurationFromXML",
        {"xml": dump(small_computer(A, 6))},
        (("comp-a", 200),),
        NOT_COMPUTER_A,
    ),
    # what instances and users write
    Row(  # alice asks for her root again, as it is
        "POST",
        "requestComputerPartition",
        request_form("alice-root", parameters={"p": "1"}, filter={"computer_guid": A}),
        (("alice", 200),),
        # a partition could make this call: a child of that title in its own tree
        ("bob", "comp-a", "comp-b"),
    ),
    Row(
        "POST",
        "softwareInstanceRename",
        {**PARTITION_A1, "new_name": "alice-child"},  # its own name: nothing changes
        (("part-a1", 200),),
        NOT_PARTITION_A1,
    ),
    Row(
        "POST",
        "setComputerPartitionConnectionXml",
        {**PARTITION_A1, "connection_xml": dump({"url": "https://child"})},
        (("part-a1", 200), ("comp-a", 200)),
        NOT_PARTITION_A1,
    ),
    Row(
        "POST",
        "updateComputerPartitionRelatedInstanceList",
        {**PARTITION_A1, "instance_reference_xml": dump([])},
        (("part-a1", 200),),
        NOT_PARTITION_A1,
    ),
    Row("POST", "supplySupply", {**COMPUTER_A, "url": SR_NEW}, (("alice", 200),), NOT_A_USER),
    # a new node trades its one-time token for its certificate: anyone with the token
    Row(
        "POST",
        REGISTER_PATH,
        {"title": NEW_COMPUTER},
        (("anonymous", 200),),
        (),
        headers={"X-Access-Token": Ref("token-new")},
    ),
    # the networkcache: computers and users upload (what is there already: nothing changes),
    # every certificate of the master downloads
    Row(
        "POST",
        "shacache",
        {"content": CACHED},
        (("comp-a", 201), ("alice", 201)),
        ("part-a0", "part-a1", "part-b0"),
    ),
    Row(
        "PUT",
        "shacache/{sha512}",
        {"sha512": CACHED_SHA512, "content": CACHED},
        (("comp-b", 201), ("bob", 201)),
        ("part-a0", "part-b0"),
    ),
    Row(
        "GET",
        "shacache/{sha512}",
        {"sha512": CACHED_SHA512},
        (("comp-a", 200), ("comp-b", 200), ("part-a1", 200), ("bob", 200)),
        (),
    ),
    Row(
        "PUT",
        "shadir/{key}",
        CACHE_UPLOAD,
        (("comp-a", 201), ("alice", 201)),
        ("part-a0", "part-a2"),
    ),
    Row(
        "GET",
        "shadir/{key}",
        {"key": CACHE_KEY},
        (("comp-b", 200), ("part-a0", 200), ("part-b0", 200), ("alice", 200)),
        (),
    ),
]


@dataclass(frozen=True)
class Wrong:
    """A refused call whose form differs from its route's row: what it names is wrong."""

    why: str
    caller: str
    method: str
    path: str
    params: dict[str, Any]
    status: int = 403
    headers: dict[str, Any] = field(default_factory=dict)


CHILD_FORM = request_form("alice-child", filter={"computer_guid": A})
WRONG_CALLS: list[Wrong] = [
    # a computer id in the call that is not the certificate's
    Wrong(
        "A's certificate naming B",
        "comp-a",
        "GET",
        "getFullComputerInformation",
        {"computer_id": B},
    ),
    Wrong("A's certificate naming B", "comp-a", "POST", "computerBang", {"computer_id": B}),
    Wrong(
        "A's certificate loading B's definition",
        "comp-a",
        "POST",
        "loadComputerConfigurationFromXML",
        {"xml": dump(small_computer(B, 1))},
    ),
    Wrong(
        "A's partition naming B's partition of the same reference",
        "part-a0",
        "POST",
        "setComputerPartitionConnectionXml",
        {"computer_id": B, "computer_partition_id": "slappart0", "connection_xml": dump({})},
    ),
    # requests: a node names the requester in its form; it must be itself
    Wrong(
        "a partition naming B's partition",
        "part-a0",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, "computer_id": B, "computer_partition_id": "slappart0"},
    ),
    Wrong(
        "a partition naming the root of its tree",
        "part-a1",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, **PARTITION_A0},
    ),
    Wrong(
        "bob's partition on A naming alice's root",
        "part-a2",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, **PARTITION_A0},
    ),
    Wrong(
        "a partition naming only a partition",
        "part-a1",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, "computer_partition_id": "slappart1"},
    ),
    Wrong(
        "a computer naming no partition", "comp-a", "POST", "requestComputerPartition", CHILD_FORM
    ),
    Wrong(
        "a computer naming another's partition",
        "comp-b",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, **PARTITION_A0},
    ),
    Wrong(
        "a computer naming another's partition",
        "comp-a",
        "POST",
        "requestComputerPartition",
        {**CHILD_FORM, "computer_id": B, "computer_partition_id": "slappart0"},
    ),
    Wrong("no certificate", "anonymous", "POST", "requestComputerPartition", CHILD_FORM),
    # another user's instances: refused, or not found
    Wrong(
        "bob changing alice's root",
        "bob",
        "POST",
        "requestComputerPartition",
        request_form("alice-root", parameters={"p": "bob"}, filter={"computer_guid": A}),
    ),
    Wrong(
        "bob stopping alice's root",
        "bob",
        "POST",
        "requestComputerPartition",
        request_form(
            "alice-root", parameters={"p": "1"}, state="stopped", filter={"computer_guid": A}
        ),
    ),
    Wrong(
        "bob destroying alice's root",
        "bob",
        "POST",
        "requestComputerPartition",
        request_form("alice-root", state="destroyed"),
    ),
    Wrong(
        "bob changing alice's shared root",
        "bob",
        "POST",
        "requestComputerPartition",
        request_form(
            "alice-front", shared=True, parameters={"x": "y"}, filter={"computer_guid": A}
        ),
    ),
    Wrong(
        "bob destroying alice's shared root",
        "bob",
        "POST",
        "requestComputerPartition",
        request_form("alice-front", shared=True, state="destroyed"),
    ),
    Wrong("bob reading alice's tree", "bob", "POST", GET_PATH, {"title": "alice-root"}, 404),
    Wrong(
        "bob reading alice's shared root", "bob", "POST", GET_PATH, {"title": "alice-front"}, 404
    ),
    Wrong(
        "bob viewing alice's tree",
        "bob",
        "GET",
        "hateoas",
        {"mode": "traverse", "relative_url": "instance_tree/alice-root"},
        404,
    ),
    # a shared instance is reached only through the partition hosting it (slappart0 of A)
    *(
        Wrong(
            f"{caller} reaching alice's shared instance",
            caller,
            "POST",
            path,
            {**own, **fields, "slave_reference": Ref("front")},
            404,
        )
        for caller, own in (
            ("part-b0", {"computer_id": B, "computer_partition_id": "slappart0"}),
            ("part-a1", PARTITION_A1),
            ("part-a2", {"computer_id": A, "computer_partition_id": "slappart2"}),
        )
        for path, fields in (
            ("softwareInstanceRename", {"new_name": "taken"}),
            ("setComputerPartitionConnectionXml", {"connection_xml": dump({"url": "evil"})}),
            ("softwareInstanceError", {"error_log": "evil"}),
        )
    ),
    # registration tokens: another computer's, or none known
    Wrong(
        "B's token for another computer",
        "anonymous",
        "POST",
        REGISTER_PATH,
        {"title": A},
        headers={"X-Access-Token": Ref("token-b")},
    ),
    Wrong(
        "an unknown token",
        "anonymous",
        "POST",
        REGISTER_PATH,
        {"title": NEW_COMPUTER},
        headers={"X-Access-Token": "not-a-token"},
    ),
    Wrong(
        "B's token by A's certificate for A",
        "comp-a",
        "POST",
        REGISTER_PATH,
        {"title": A},
        headers={"X-Access-Token": Ref("token-b")},
    ),
    # the networkcache: nobody without a certificate reads it; what is written is checked
    Wrong("no certificate", "anonymous", "GET", "shacache/{sha512}", {"sha512": CACHED_SHA512}),
    Wrong("no certificate", "anonymous", "GET", "shadir/{key}", {"key": CACHE_KEY}),
    Wrong(
        "content that is not the SHA-512 named",
        "comp-a",
        "PUT",
        "shacache/{sha512}",
        {"sha512": CACHED_SHA512, "content": CACHED + b"!"},
        400,
    ),
    Wrong("a key with '..'", "comp-a", "PUT", "shadir/{key}", {**CACHE_UPLOAD, "key": "..x"}, 400),
    Wrong(  # decoded, the path has more parts than the route: no route
        "a key with an encoded '/'",
        "comp-a",
        "PUT",
        "shadir/{key}",
        {**CACHE_UPLOAD, "key": "..%2F..%2Fmaster.db"},
        404,
    ),
    Wrong(
        "an entry that is not [entry, signature]",
        "alice",
        "PUT",
        "shadir/{key}",
        {**CACHE_UPLOAD, "content": json.dumps({"sha512": CACHED_SHA512})},
        400,
    ),
]


def _key(route: Route | Row | Wrong) -> tuple[str, str]:
    return route.method, route.path


def test_the_table_has_a_row_for_every_route() -> None:
    """A route added to `routes.ROUTES` without a row here fails this test."""
    routes = [_key(route) for route in ROUTES]
    rows = [_key(row) for row in ROWS]
    assert sorted(rows) == sorted(routes)  # each route once, no route unknown
    refused = {_key(row) for row in ROWS if row.refused} | {_key(w) for w in WRONG_CALLS}
    assert refused == set(routes)
    for row in ROWS:
        assert row.allowed and not {c for c, _ in row.allowed} & set(row.refused), row.path


HANDSHAKE_REFUSED = (
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
ALLOWED = [(row, caller, status) for row in ROWS for caller, status in row.allowed]
REFUSED = [
    (row, caller)
    for row in ROWS
    for caller in (*row.refused, *(() if row.path == REGISTER_PATH else ("anonymous",)))
]
HANDSHAKES = [
    (row, variant, tls) for row in ROWS for variant in (FOREIGN, EXPIRED) for tls in ("", "1.2")
]


@pytest.mark.parametrize(
    ("row", "caller", "status"),
    ALLOWED,
    ids=[f"{row.path}-{caller}" for row, caller, _ in ALLOWED],
)
def test_the_right_certificate_is_answered(site: Site, row: Row, caller: str, status: int) -> None:
    answer = site.call(caller, row.method, row.path, row.params, row.headers)
    assert answer.status_code == status, answer.text


def assert_refused(site: Site, call: Any, status: int = 403) -> httpx.Response:
    before, cached = full_dump(site.store), cache_dump(site)
    answer = call()
    assert answer.status_code == status, answer.text
    assert cache_dump(site) == cached
    after = full_dump(site.store)
    assert after["snapshot"] == before["snapshot"]
    for table in ("registration_token", "credential"):
        assert after["tables"][table] == before["tables"][table], table
    assert after == before
    return answer


@pytest.mark.parametrize(
    ("row", "caller"), REFUSED, ids=[f"{row.path}-{caller}" for row, caller in REFUSED]
)
def test_a_wrong_caller_is_refused_and_nothing_changes(site: Site, row: Row, caller: str) -> None:
    assert_refused(site, lambda: site.call(caller, row.method, row.path, row.params, row.headers))


@pytest.mark.parametrize(
    "wrong", WRONG_CALLS, ids=[f"{w.path}-{w.caller}-{w.why}" for w in WRONG_CALLS]
)
def test_a_call_naming_what_is_not_the_callers_is_refused(site: Site, wrong: Wrong) -> None:
    assert_refused(
        site,
        lambda: site.call(wrong.caller, wrong.method, wrong.path, wrong.params, wrong.headers),
        wrong.status,
    )


@pytest.mark.parametrize(
    ("row", "variant", "tls"),
    HANDSHAKES,
    ids=[f"{row.path}-{variant}-TLS{tls or 'default'}" for row, variant, tls in HANDSHAKES],
)
def test_a_certificate_of_another_ca_or_expired_is_refused_at_the_handshake(
    site: Site, row: Row, variant: str, tls: str
) -> None:
    """The allowed caller's own identity, in a certificate the master did not issue or that
    expired: TLS itself refuses it, no request is read. With TLS 1.3 the client finishes
    its side of the handshake before the master checks its certificate: it learns of the
    refusal by a connection closed; with TLS 1.2 the handshake itself fails (the master
    drops it without an alert the client could read: why is checked on the certificate)."""
    caller = next((c for c, _ in row.allowed if c != "anonymous"), "comp-a")
    before = full_dump(site.store)
    with pytest.raises(HANDSHAKE_REFUSED) as info:
        site.call(caller, row.method, row.path, row.params, row.headers, variant, tls)
    if tls:  # refused before the handshake ended: no request was sent
        assert isinstance(info.value, httpx.ConnectError), repr(info.value)
        assert any(isinstance(e, ssl.SSLError) for e in chain(info.value)), repr(info.value)
    assert full_dump(site.store) == before
    # and refused for what is wrong with it: the master's own check of a certificate says so
    certificate = site.credentials(caller, variant)[1].read_bytes()
    reason = "not issued by this master's CA" if variant == FOREIGN else "not valid now"
    with pytest.raises(IdentityError, match=reason):
        site.authority.identity_of(certificate)
    if variant == EXPIRED:  # this master's CA issued it, and it was valid then
        assert site.past.identity_of(certificate) == IDENTITIES[caller]


def chain(exc: BaseException) -> Iterator[BaseException]:
    """An exception and those it was raised from or during."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def test_a_good_certificate_over_tls_1_2_is_answered(site: Site) -> None:
    """The TLS 1.2 client of the handshake cases is refused for its certificate only."""
    answer = site.call("comp-a", "GET", "getFullComputerInformation", COMPUTER_A, tls="1.2")
    assert answer.status_code == 200, answer.text


# --- what a user sees of another's, and the requester of a partition -------------------------


def titles(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {tree["title"] for tree in answer.json()["result_list"]}


def test_each_user_lists_only_its_own_trees(site: Site) -> None:
    alice = titles(site.call("alice", "POST", LIST_PATH, {}))
    bob = titles(site.call("bob", "POST", LIST_PATH, {}))
    assert {"alice-root", "alice-front"} <= alice and "bob-root" not in alice
    assert "bob-root" in bob and not {"alice-root", "alice-front"} & bob

    query = 'portal_type:"Instance Tree" AND validation_state:validated'
    search = site.call("bob", "GET", "hateoas", {"mode": "search", "query": query})
    found = {row["title"] for row in search.json()["_embedded"]["contents"]}
    assert "bob-root" in found and not {"alice-root", "alice-front"} & found
    one = site.call(
        "bob", "GET", "hateoas", {"mode": "search", "query": f'{query} AND title:="alice-root"'}
    )
    assert one.json()["_embedded"]["contents"] == []


def partition_rows(site: Site) -> dict[str, tuple[Any, ...]]:
    """Busy partitions by title: (computer, reference, root title, requester, owner)."""

    def rows(session: Any) -> dict[str, tuple[Any, ...]]:
        from slapgrid.master.tables import PartitionRow

        query = select(PartitionRow).where(PartitionRow.slap_state == "busy")
        return {
            f"{p.requested_by}/{p.title}": (
                p.computer,
                p.reference,
                p.root_title,
                (p.requester_computer, p.requester_partition),
                p.owner,
            )
            for p in session.scalars(query)
        }

    return site.store.read_with(rows)


def test_a_partitions_claimed_requester_header_is_not_honoured_over_tls(site: Site) -> None:
    """`Authorization: X-SlapPartition` is how a trusted (`--insecure`) caller names the
    requesting partition. Over TLS the requester is the certificate's (`Caller.requester`):
    A's slappart0 claiming B's slappart0 requests in its own tree, alice's."""
    claim_b = {"Authorization": f"X-SlapPartition computer_id={B}, computer_partition_id=slappart0"}
    before = partition_rows(site)
    form = request_form("claimed-child", filter={"computer_guid": A})
    answer = site.call("part-a0", "POST", "requestComputerPartition", form, claim_b)
    assert answer.status_code == 200, answer.text
    assert marshal.loads(answer.content).state["root_instance_title"] == "alice-root"
    after = partition_rows(site)
    added = {key: value for key, value in after.items() if key not in before}
    assert list(added) == ["alice-root/claimed-child"]
    [(computer, _, root, requester, owner)] = added.values()
    assert (computer, root, requester, owner) == (A, "alice-root", (A, "slappart0"), None)
    assert {k: v for k, v in after.items() if k in before} == before  # bob's tree as it was

    # B's partition claiming A's slappart0, re-requesting alice's child with other
    # parameters: a new instance of that name in bob's tree; alice's child is untouched
    claim_a = {"Authorization": f"X-SlapPartition computer_id={A}, computer_partition_id=slappart0"}
    before = after
    form = request_form("alice-child", SR_B, parameters={"evil": "1"}, filter={"computer_guid": B})
    answer = site.call("part-b0", "POST", "requestComputerPartition", form, claim_a)
    assert answer.status_code == 200, answer.text
    assert marshal.loads(answer.content).state["root_instance_title"] == "bob-root"
    after = partition_rows(site)
    computer, _, root, requester, _ = after["bob-root/alice-child"]
    assert (computer, root, requester) == (B, "bob-root", (B, "slappart0"))
    assert {k: v for k, v in after.items() if k in before} == before
    alice_child = next(
        p
        for p in site.store.snapshot()["partitions"]
        if p["title"] == "alice-child" and p["computer"] == A
    )
    assert alice_child["parameters"] == {}


def test_a_computers_claimed_requester_header_is_not_honoured_either(site: Site) -> None:
    """A computer names one of its own partitions in the form; a header claiming another
    computer's partition changes nothing of that."""
    claim_b = {"Authorization": f"X-SlapPartition computer_id={B}, computer_partition_id=slappart0"}
    form = {**request_form("alice-child", filter={"computer_guid": A}), **PARTITION_A0}
    before = full_dump(site.store)
    answer = site.call("comp-a", "POST", "requestComputerPartition", form, claim_b)
    assert answer.status_code == 200, answer.text
    assert marshal.loads(answer.content).state["root_instance_title"] == "alice-root"
    assert full_dump(site.store) == before  # alice's child asked for as it is: no change


def test_a_users_request_naming_a_partition_is_a_root_of_its_own(site: Site) -> None:
    """A user never requests as a partition: the form's partition is not the requester."""
    before = partition_rows(site)
    form = {
        **request_form("bob-named", SR_B, filter={"computer_guid": B}),
        **PARTITION_A0,
    }
    answer = site.call("bob", "POST", "requestComputerPartition", form)
    assert answer.status_code == 200, answer.text
    after = partition_rows(site)
    assert after["/bob-named"][2:] == ("bob-named", (None, None), "bob")
    assert {k: v for k, v in after.items() if k in before} == before
