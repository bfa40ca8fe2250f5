"""The embedded SLAP master: storage over SQL and an HTTP app speaking the SLAP protocol."""
