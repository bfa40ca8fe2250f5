"""slapgrid: a SlapOS node agent, its SLAP protocol client and an embedded SLAP master."""

# the single source of the version (pyproject.toml reads it): reading the installed
# package's metadata instead would cost every run of the command a tenth of its start-up
__version__ = "0.1.0"
