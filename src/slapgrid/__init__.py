"""slapgrid: a SlapOS node agent, its SLAP protocol client and an embedded SLAP master."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slapgrid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
