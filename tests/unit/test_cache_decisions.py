"""The binary cache's pure rules: settings, refusals, entry choice, buildout options."""

from __future__ import annotations

import json

import pytest

from slapgrid.node.software.cache import decisions as d
from slapgrid.node.software.cache.decisions import CacheSettings, Candidate, Machine

CERT = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
DOWNLOAD = {
    "download-binary-cache-url": "http://c/shacache",
    "download-binary-dir-url": "http://c/shadir",
    "signature-certificate-list": f"{CERT}\n{CERT.replace('AAAA', 'BBBB')}",
}
UPLOAD = {
    "upload-binary-cache-url": "http://c/shacache",
    "upload-binary-dir-url": "http://c/shadir",
    "signature-private-key-file": "/k.pem",
}
HTTPS = {
    "download-binary-cache-url": "https://master/shacache",
    "download-binary-dir-url": "https://master/shadir",
}
CLIENT = {
    f"{service}-{kind}-file": f"/{kind}.pem"
    for service in ("shacache", "shadir")
    for kind in ("cert", "key")
}
HERE = Machine("x86_64-linux-gnu", ("debian", "12.5", "bookworm"))


def entry(**fields: object) -> str:
    base = {"sha512": "ab", "multiarch": "x86_64-linux-gnu", "os": ["debian", "12", ""]}
    return json.dumps(base | fields)


def test_certificates_are_split_as_the_reference_does() -> None:
    assert CacheSettings(DOWNLOAD).certificates == (CERT, CERT.replace("AAAA", "BBBB"))


@pytest.mark.parametrize(
    ("options", "url", "exists", "expected"),
    [
        (DOWNLOAD, "http://sr/a.cfg", False, None),
        (DOWNLOAD, "http://sr/a.cfg", True, d.DIRECTORY_EXISTS),
        ({}, "http://sr/a.cfg", False, d.NOT_CONFIGURED),
        (
            DOWNLOAD | {"download-from-binary-cache-url-blacklist": "\nhttp://sr/\n"},
            "http://sr/a",
            False,
            d.BLACKLISTED,
        ),
        (
            DOWNLOAD | {"binary-cache-url-blacklist": "http://sr/"},
            "http://sr/a",
            False,
            d.BLACKLISTED,
        ),
        (DOWNLOAD | {"binary-cache-url-blacklist": "http://other/"}, "http://sr/a", False, None),
        (DOWNLOAD | {"signature-certificate-list": ""}, "http://sr/a", False, d.NO_CERTIFICATE),
        (DOWNLOAD | HTTPS, "http://sr/a", False, d.NO_CLIENT_CERTIFICATE),
        (
            DOWNLOAD | HTTPS | {"shacache-cert-file": "/c", "shacache-key-file": "/k"},
            "http://sr/a",
            False,
            d.NO_CLIENT_CERTIFICATE,
        ),  # shadir's files missing
        (DOWNLOAD | HTTPS | CLIENT, "http://sr/a", False, None),
    ],
)
def test_when_the_cache_is_asked(
    options: dict[str, str], url: str, exists: bool, expected: str | None
) -> None:
    assert d.download_refusal(CacheSettings(options), url, exists) == expected


def test_the_force_list_matches_url_prefixes() -> None:
    settings = CacheSettings({"download-from-binary-cache-force-url-list": "http://a/\nhttp://b/"})
    assert d.forced(settings, "http://b/x.cfg") and not d.forced(settings, "http://c/x.cfg")


@pytest.mark.parametrize(
    ("options", "shared", "expected"),
    [
        (UPLOAD, False, None),
        ({**UPLOAD, "signature-private-key-file": ""}, False, "no signature-private-key-file"),
        (
            {**UPLOAD, "signature-private-key-file": "", "signature_private_key_file": "/k"},
            False,
            None,
        ),
        (
            {**UPLOAD, "upload-binary-dir-url": ""},
            False,
            "no upload-binary-cache-url / upload-binary-dir-url",
        ),
        (UPLOAD | {"upload-to-binary-cache-url-blacklist": "http://sr/"}, False, d.BLACKLISTED),
        (UPLOAD, True, "it uses shared parts (.shared)"),
    ],
)
def test_when_a_build_is_uploaded(
    options: dict[str, str], shared: bool, expected: str | None
) -> None:
    assert d.upload_refusal(CacheSettings(options), "http://sr/a.cfg", shared) == expected


def test_the_key_is_the_md5_of_the_url() -> None:
    assert d.cache_key("http://sr/a.cfg") == "e441ab47d0dd10f9162b523229e62c75"


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([], d.NO_ENTRY),
        ([Candidate(entry(), False)], d.BAD_SIGNATURE),
        ([Candidate("not json", True)], d.UNREADABLE_ENTRY),
        ([Candidate(json.dumps({"multiarch": "x"}), True)], d.UNREADABLE_ENTRY),
        ([Candidate(entry(multiarch="aarch64-linux-gnu"), True)], d.INCOMPATIBLE),
        ([Candidate(entry(os=["ubuntu", "24.04", "noble"]), True)], d.INCOMPATIBLE),
    ],
)
def test_why_no_entry_is_chosen(candidates: list[Candidate], expected: str) -> None:
    assert d.choose(candidates, HERE) == expected


def test_the_first_trusted_compatible_entry_is_chosen() -> None:
    candidates = [
        Candidate(entry(sha512="untrusted"), False),
        Candidate(entry(sha512="arm", multiarch="aarch64-linux-gnu"), True),
        Candidate(entry(sha512="good", os=["Raspbian", "12.1", "x"]), True),
        Candidate(entry(sha512="later"), True),
    ]
    assert d.choose(candidates, HERE)["sha512"] == "good"  # type: ignore[index]


def test_debian_matches_on_its_major_version_other_systems_exactly() -> None:
    ubuntu = Machine("x86_64-linux-gnu", ("ubuntu", "24.04", "noble"))
    assert d.compatible(ubuntu, json.loads(entry(os=["ubuntu", "24.04", "noble"])))
    assert not d.compatible(ubuntu, json.loads(entry(os=["ubuntu", "24.04", ""])))
    assert not d.compatible(HERE, json.loads(entry(os=["debian", "11", ""])))


def test_old_x86_64_entries_get_their_missing_fields() -> None:
    old = json.dumps({"sha512": "ab", "machine": "x86_64", "os": "('debian', '12', '')"})
    assert d.choose([Candidate(old, True)], HERE)["sha512"] == "ab"  # type: ignore[index]


def test_buildout_gets_the_reference_networkcache_options() -> None:
    options = {
        **UPLOAD,
        "upload-cache-url": "http://c/up",
        "shadir-cert-file": "/d.crt",
        "download-binary-cache-url": "http://c/shacache",
    }
    assert d.buildout_arguments(CacheSettings(options)) == [
        "buildout:networkcache-section=networkcache",
        "networkcache:signature-private-key-file=/k.pem",
        "networkcache:upload-cache-url=http://c/up",
        "networkcache:shadir-cert-file=/d.crt",
    ]
    tls_only = CacheSettings({"shacache-ca-file": "/ca"})
    assert d.buildout_arguments(tls_only) == ["networkcache:shacache-ca-file=/ca"]
    assert d.buildout_arguments(CacheSettings({})) == []


def test_origins_are_described_for_status() -> None:
    assert d.Origin(True).describe() == "from cache"
    assert d.Origin(False, d.NO_ENTRY).describe() == "built: no cache entry"


def test_upload_metadata_is_the_reference_entry() -> None:
    assert d.upload_metadata("http://sr/a", "/opt/slapgrid", HERE) == {
        "software_url": "http://sr/a",
        "software_root": "/opt/slapgrid",
        "multiarch": "x86_64-linux-gnu",
        "os": ["debian", "12.5", "bookworm"],
    }


@pytest.mark.parametrize(
    ("options", "exists", "expected"),
    [
        (DOWNLOAD, False, "binary cache first"),
        ({}, False, f"from source: {d.NOT_CONFIGURED}"),
        (DOWNLOAD, True, f"from source: {d.DIRECTORY_EXISTS}"),
        (DOWNLOAD | {"signature-certificate-list": ""}, False, f"from source: {d.NO_CERTIFICATE}"),
        (
            DOWNLOAD | {"download-from-binary-cache-force-url-list": "http://sr/"},
            False,
            "binary cache only (forced)",
        ),
        (
            {"download-from-binary-cache-force-url-list": "http://sr/"},
            False,
            f"binary cache forced, but {d.NOT_CONFIGURED}: will fail",
        ),
    ],
)
def test_the_plan_says_whether_the_cache_is_tried(
    options: dict[str, str], exists: bool, expected: str
) -> None:
    assert d.plan_note(CacheSettings(options), "http://sr/a.cfg", exists) == expected
