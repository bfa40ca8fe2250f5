"""The cache's two moments in a build: before (install from the cache?) and after (upload).

`software/run.py` calls these and nothing else of the cache; both log one line saying
what happened and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slapgrid.errors import SlapgridError
from slapgrid.node.software.cache import decisions, transfer
from slapgrid.node.software.cache.decisions import CacheSettings, Origin

log = logging.getLogger(__name__)


class CacheRequired(SlapgridError):
    """`download-from-binary-cache-force-url-list` names the release and the cache failed."""


def before_build(settings: CacheSettings, url: str, directory: Path) -> Origin:
    """Install `url` from the cache if it can; else the reason it must be built."""
    refusal = decisions.download_refusal(settings, url, directory.exists())
    origin = Origin(False, refusal) if refusal else transfer.fetch(settings, url, directory)
    extra = {"software": url}
    if origin.from_cache:
        log.info("%s: installed from the binary cache", url, extra=extra)
    elif decisions.forced(settings, url):
        raise CacheRequired(
            f"binary cache forced for {url}, but {origin.reason}: not building, will retry"
        )
    elif refusal == decisions.NOT_CONFIGURED:
        log.debug("%s: no binary cache configured", url, extra=extra)
    else:
        log.info("%s: building from source: %s", url, origin.reason, extra=extra)
    return origin


def after_build(settings: CacheSettings, url: str, directory: Path) -> None:
    """Upload a release just built when the node can sign; a failure is only logged."""
    refusal = decisions.upload_refusal(settings, url, (directory / ".shared").exists())
    if refusal is None:
        transfer.publish(settings, url, directory)
    else:
        log.debug("%s: not uploaded to the binary cache: %s", url, refusal, extra={"software": url})
