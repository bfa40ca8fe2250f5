"""Buildout's output for people: each line says whose it is, a failure says why."""

from __future__ import annotations

import logging

import pytest

from slapgrid.node.buildout import BuildoutError, _logger_output, error_cause

MISSING_EGG = """\
Installing eggs.
Getting distribution for 'foo'.
While:
  Installing eggs.
  Getting distribution for 'foo'.

Error: Couldn't find a distribution for 'foo'.
"""

TRACEBACK = """\
An internal error occurred due to a bug in either zc.buildout or in a
recipe being used:
Traceback (most recent call last):
  File "/srv/eggs/zc/buildout/buildout.py", line 2174, in main
    getattr(buildout, command)(args)
KeyError: 'port'
"""


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        (MISSING_EGG, "Error: Couldn't find a distribution for 'foo'."),
        (TRACEBACK, "KeyError: 'port'"),
        (MISSING_EGG + "Error: second\n  \n", "Error: second"),
        ("Installing eggs.\nKilled\n", None),
        ("", None),
    ],
)
def test_the_cause_is_the_last_meaningful_error_line(output: str, cause: str | None) -> None:
    assert error_cause(output) == cause
    assert BuildoutError("buildout failed", output).cause == cause


def test_each_output_line_carries_its_partition(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="slapgrid"):
        _logger_output("slappart3", partition="slappart3")("Installing [section] web.")
    [record] = caplog.records
    assert record.getMessage() == "[slappart3] Installing [section] web."
    assert record.partition == "slappart3"  # type: ignore[attr-defined]
