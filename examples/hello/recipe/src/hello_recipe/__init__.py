"""Buildout recipes of the hello example Software Release (standard library only)."""
