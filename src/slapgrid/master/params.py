"""The parameters of one SLAP call, from the query string (GET) or the form body (POST)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from slapgrid.master.errors import BadRequest
from slapgrid.slap import marshal, xml_text
from slapgrid.slap.errors import ProtocolError

FREE_TEXT = frozenset({"error_log", "message"})
"""Fields holding what a node saw (build output, a bang's reason): cleaned, not refused."""


class Params:
    """The parameters of one call; `p["name"]` is mandatory, `p.get("name")` is not.

    With `none_is_absent`, the literal `None` the reference client sends for absent values
    counts as absent. A parameter given twice is refused rather than guessed at, and so is
    a value XML cannot carry, except in free text, which is cleaned.
    """

    def __init__(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        none_is_absent: bool,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        self.document: Mapping[str, Any] = document or {}
        """A JSON call's body (an object); empty for SLAP calls."""
        self._values: dict[str, str] = {}
        seen: set[str] = set()
        for key, value in items:
            if key in seen:
                raise BadRequest(f"parameter {key!r} is given more than once")
            seen.add(key)
            if not isinstance(value, str):
                raise BadRequest(f"parameter {key!r} must be a plain form field")
            if not xml_text.is_xml_text(key):
                raise BadRequest("a parameter name holds characters XML cannot carry")
            if key in FREE_TEXT:
                value = xml_text.clean(value)
            elif not xml_text.is_xml_text(value):
                raise BadRequest(f"parameter {key!r} holds characters XML cannot carry")
            if not (none_is_absent and value == "None"):
                self._values[key] = value

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise BadRequest(f"missing parameter {name!r}") from None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name, default)

    def marshalled(self, name: str, default: Any) -> Any:
        """An xml_marshaller document carried in a field; absent → `default`."""
        raw = self._values.get(name)
        if raw is None:
            return default
        try:
            return marshal.loads(raw)
        except ProtocolError as exc:
            raise BadRequest(f"parameter {name!r}: {exc}") from None

    def slave_reference(self) -> str | None:
        """`slave_reference`, where the master treats any casing of `None` as absent."""
        value = self._values.get("slave_reference")
        return None if not value or value.lower() == "none" else value
