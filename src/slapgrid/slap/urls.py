"""The two kinds of URL SLAP carries, checked by one rule wherever they enter.

A Software Release URL names a build directory (its MD5) and enters `buildout.cfg`; the
agent refuses one with whitespace, control or shell characters, so the embedded master
refuses the same ones at supply and request time, with the same words, instead of handing
a node work it can never do. A master URL must be http(s) with a host, known before the
first request rather than as a failure deep in the HTTP client.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus

_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f;|&$`<>\"'\\]")


class InvalidURL(SlapgridError):
    """A URL that this rule refuses; the message says why."""

    exit_code = ExitStatus.USAGE


def software_release_url(value: object) -> str:
    """A URL or absolute path without whitespace, control or shell characters."""
    if not isinstance(value, str) or not value:
        raise InvalidURL("software release URL is empty")
    bad = _URL_FORBIDDEN.search(value)
    if bad:
        raise InvalidURL(
            f"software release URL {value!r} contains {bad.group()!r} "
            "(no whitespace, control or shell characters)"
        )
    return value


def normalise_master_url(url: str) -> str:
    """Bracket a bare IPv6 host and end with `/`, so `urljoin` keeps any path prefix."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    if "[" not in netloc and netloc.count(":") > 1:
        netloc = _bracket_ipv6(netloc)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    normal = urlunsplit((parts.scheme, netloc, path, "", ""))
    checked = urlsplit(normal)
    try:
        checked.port  # noqa: B018  # raises ValueError unless a number below 65536
    except ValueError:
        checked = checked._replace(netloc="")
    if parts.scheme not in ("http", "https") or not checked.hostname:
        raise InvalidURL(f"master URL must be http(s)://host[:port][/path], not {url!r}")
    return normal


def _bracket_ipv6(netloc: str) -> str:
    """`fe80::1` → `[fe80::1]`; a trailing chunk that breaks the address is the port."""
    userinfo, _, host = netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    for address, port in ((host, ""), tuple(host.rsplit(":", 1))):
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            continue
        return f"{prefix}[{address}]" + (f":{port}" if port else "")
    return netloc
