"""The reference implementation for interop tests: slapos.core 1.26.1 in `.venv-ref`.

The set-up lives in tests/reference_env.py (benchmarks share it); these fixtures only turn
its outcomes into pytest's: no Python >= 3.12 skips the interop tests, any other failure
fails them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import reference_env


@pytest.fixture(scope="session")
def reference_venv() -> Path:
    """`.venv-ref` with slapos.core 1.26.1 and slapos.libnetworkcache, created if missing."""
    try:
        return reference_env.ensure_venv()
    except reference_env.Unavailable as exc:
        pytest.skip(str(exc))
    except reference_env.InstallError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def reference_python(reference_venv: Path) -> Path:
    return reference_venv / "bin" / "python"


@pytest.fixture
def reference_proxy(reference_venv: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`slapos proxy start` on a free port: yields (url, default computer id)."""
    computer = "COMP-PROXY"
    with reference_env.reference_proxy(reference_venv, tmp_path, computer) as url:
        yield url, computer
