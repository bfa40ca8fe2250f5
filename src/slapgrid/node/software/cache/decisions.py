"""Pure rules of the binary cache: settings, key, entry choice, machine compatibility.

They are slapos.core 1.26.1's, so that entries either agent uploads are found and trusted
by the other: the key is the MD5 of the release URL, an entry is a signed JSON object
naming the archive's SHA-512, the multiarch (`gcc -dumpmachine`) and the distribution.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slapgrid.node.safety import software_hash

CERTIFICATE_MARKER = "-----BEGIN CERTIFICATE-----"
TLS_KEYS = tuple(
    f"{service}-{kind}-file" for service in ("shacache", "shadir") for kind in ("ca", "cert", "key")
)
BUILDOUT_KEYS = ("signature-private-key-file", "upload-cache-url", "upload-dir-url", *TLS_KEYS)
"""What the release's buildout is given (its own networkcache section), in the reference's
order."""
KEYS = (
    "download-binary-cache-url",
    "download-binary-dir-url",
    "upload-binary-cache-url",
    "upload-binary-dir-url",
    "binary-cache-url-blacklist",
    "download-from-binary-cache-url-blacklist",
    "upload-to-binary-cache-url-blacklist",
    "download-from-binary-cache-force-url-list",
    "signature-certificate-list",
    "signature_private_key_file",
    *BUILDOUT_KEYS,
)
"""Every `[networkcache]` (or `[slapos]`) key a node reads."""

# why a release was built rather than installed from the cache (`Origin.reason`)
NOT_CONFIGURED = "no binary cache configured"
NO_CERTIFICATE = "no signature-certificate-list"
BLACKLISTED = "blacklisted"
DIRECTORY_EXISTS = "directory already exists"
NO_ENTRY = "no cache entry"
BAD_SIGNATURE = "bad signature"
INCOMPATIBLE = "incompatible machine"
UNREADABLE_ENTRY = "unreadable entry"
WRONG_CHECKSUM = "wrong checksum"
DOWNLOAD_FAILED = "download failed"
BAD_ARCHIVE = "bad archive"
UNREACHABLE = "cache unreachable"
NO_CLIENT_CERTIFICATE = "https cache without shacache/shadir cert and key files"


def _lines(value: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def split_certificates(text: str) -> tuple[str, ...]:
    """`signature-certificate-list`: PEM certificates one after the other."""
    return tuple(
        f"{CERTIFICATE_MARKER}\n{part.strip()}"
        for part in text.split(CERTIFICATE_MARKER)
        if part.strip()
    )


@dataclass(frozen=True)
class CacheSettings:
    """The cache keys of a node's configuration ([slapos] and [networkcache] merged)."""

    options: Mapping[str, str]

    def get(self, key: str) -> str:
        return (self.options.get(key) or "").strip()

    @property
    def certificates(self) -> tuple[str, ...]:
        return split_certificates(self.options.get("signature-certificate-list") or "")

    @property
    def private_key_file(self) -> str:
        return self.get("signature-private-key-file") or self.get("signature_private_key_file")

    @property
    def download_blacklist(self) -> tuple[str, ...]:
        """The deprecated `binary-cache-url-blacklist` counts when the new key is unset."""
        value = self.options.get("download-from-binary-cache-url-blacklist") or ""
        return _lines(value or self.options.get("binary-cache-url-blacklist") or "")

    @property
    def upload_blacklist(self) -> tuple[str, ...]:
        return _lines(self.options.get("upload-to-binary-cache-url-blacklist") or "")

    @property
    def force_list(self) -> tuple[str, ...]:
        return _lines(self.options.get("download-from-binary-cache-force-url-list") or "")


def cache_key(url: str) -> str:
    return software_hash(url)


def _matches(url: str, prefixes: Sequence[str]) -> bool:
    return any(url.startswith(prefix) for prefix in prefixes)


def forced(settings: CacheSettings, url: str) -> bool:
    """A release named by the force list is never built here: the cache or an error."""
    return _matches(url, settings.force_list)


def download_refusal(settings: CacheSettings, url: str, directory_exists: bool) -> str | None:
    """Why the cache is not even asked for `url`, or None to ask it.

    A release directory already there is a previous build's (maybe partial): as the
    reference, only a fresh directory is taken from the cache.
    """
    if directory_exists:
        return DIRECTORY_EXISTS
    if not (settings.get("download-binary-cache-url") and settings.get("download-binary-dir-url")):
        return NOT_CONFIGURED
    if _matches(url, settings.download_blacklist):
        return BLACKLISTED
    if not settings.certificates:
        return NO_CERTIFICATE
    if not https_files_given(settings, "download"):
        return NO_CLIENT_CERTIFICATE
    return None


def plan_note(settings: CacheSettings, url: str, directory_exists: bool) -> str:
    """What a build of `url` will try first, as `slapgrid plan` says it: the cache (the
    same rules `before_build` applies), or why it builds from source without asking."""
    refusal = download_refusal(settings, url, directory_exists)
    if forced(settings, url):
        if refusal is None:
            return "binary cache only (forced)"
        return f"binary cache forced, but {refusal}: will fail"
    if refusal is None:
        return "binary cache first"
    return f"from source: {refusal}"


def https_files_given(settings: CacheSettings, direction: str) -> bool:
    """libnetworkcache always presents a client certificate to an https shacache or
    shadir (the master's asks for one): without its files, it cannot even connect."""
    return all(
        settings.get(f"{service}-cert-file") and settings.get(f"{service}-key-file")
        for service, url in (
            ("shacache", settings.get(f"{direction}-binary-cache-url")),
            ("shadir", settings.get(f"{direction}-binary-dir-url")),
        )
        if url.startswith("https:")
    )


def upload_refusal(settings: CacheSettings, url: str, shared: bool) -> str | None:
    """Why a release just built is not uploaded, or None to upload it.

    An unsigned entry is useless (no node trusts it), and a release using shared parts
    (`.shared`) does not hold all it needs, as the reference decides.
    """
    if not (settings.get("upload-binary-cache-url") and settings.get("upload-binary-dir-url")):
        return "no upload-binary-cache-url / upload-binary-dir-url"
    if not settings.private_key_file:
        return "no signature-private-key-file"
    if _matches(url, settings.upload_blacklist):
        return BLACKLISTED
    if shared:
        return "it uses shared parts (.shared)"
    return None


def buildout_arguments(settings: CacheSettings) -> list[str]:
    """`networkcache:…` options for the release's buildout, so its downloads use the cache.

    The section is named only when the node can upload (the reference's rule): downloads
    use the cache the release's own profile names.
    """
    values = {
        key: settings.private_key_file if key == "signature-private-key-file" else settings.get(key)
        for key in BUILDOUT_KEYS
    }
    arguments = []
    if any(values[key] for key in BUILDOUT_KEYS[:3]):
        arguments.append("buildout:networkcache-section=networkcache")
    arguments += [f"networkcache:{key}={value}" for key, value in values.items() if value]
    return arguments


# --- entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What an archive was built on: `gcc -dumpmachine` and (name, version, codename)."""

    multiarch: str
    os: tuple[str, str, str]

    def describe(self) -> str:
        return f"{self.multiarch}, {' '.join(part for part in self.os if part)}"


def _debianized(os: Sequence[str]) -> tuple[str, str, str]:
    """Raspbian is Debian; Debian matches on its major version alone, never its codename."""
    name, version, codename = (str(part) for part in os)
    name = name.lower()
    if name == "raspbian":
        name = "debian"
    if name == "debian":
        return name, version.split(".")[0], ""
    return name, version, codename


def compatible(machine: Machine, entry: Mapping[str, Any]) -> bool:
    try:
        return entry["multiarch"] == machine.multiarch and _debianized(entry["os"]) == _debianized(
            machine.os
        )
    except (KeyError, TypeError, ValueError):
        return False


def parse_entry(text: str) -> dict[str, Any] | None:
    """A shadir entry's JSON, or None; old x86_64 entries get the fields they lacked."""
    try:
        entry = json.loads(text)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha512"), str):
            return None
        if "multiarch" not in entry and entry.get("machine") == "x86_64":
            entry["multiarch"] = "x86_64-linux-gnu"
            entry["os"] = list(ast.literal_eval(entry["os"]))
    except (ValueError, TypeError, SyntaxError, KeyError):
        return None
    return entry


@dataclass(frozen=True)
class Candidate:
    """One shadir entry: its JSON text, and whether a trusted certificate signed it."""

    text: str
    trusted: bool


def choose(candidates: Sequence[Candidate], machine: Machine) -> dict[str, Any] | str:
    """The first trusted entry built for this machine, or why there is none."""
    if not candidates:
        return NO_ENTRY
    trusted = [candidate for candidate in candidates if candidate.trusted]
    if not trusted:
        return BAD_SIGNATURE
    entries = [entry for entry in map(parse_entry, (c.text for c in trusted)) if entry]
    if not entries:
        return UNREADABLE_ENTRY
    return next((entry for entry in entries if compatible(machine, entry)), INCOMPATIBLE)


def upload_metadata(url: str, software_root: str, machine: Machine) -> dict[str, Any]:
    """The entry's fields besides `sha512` (which the upload adds), as the reference's."""
    return {
        "software_url": url,
        "software_root": software_root,
        "multiarch": machine.multiarch,
        "os": list(machine.os),
    }


@dataclass(frozen=True)
class Origin:
    """Where a release's files came from, kept for `slapgrid status`."""

    from_cache: bool
    reason: str = ""

    def describe(self) -> str:
        if self.from_cache:
            return "from cache"
        return f"built: {self.reason}" if self.reason else "built"
