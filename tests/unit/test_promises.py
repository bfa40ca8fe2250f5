"""Promise decisions (periodicity, modes, verdicts), result/cache files and the plugin runner."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest

from slapgrid.node.layout import PartitionPaths
from slapgrid.node.promises import plugin_runner as promise_runner
from slapgrid.node.promises.cache import (
    CacheEntry,
    Decision,
    cache_is_current,
    decide,
    still_fresh,
)
from slapgrid.node.promises.check import legacy_verdict
from slapgrid.node.promises.discovery import PromiseFile, discover
from slapgrid.node.promises.results import (
    ANOMALY,
    TEST,
    PromiseReport,
    PromiseResult,
    Verdict,
    format_date,
    truncate,
)
from slapgrid.node.promises.run import last_results, log_report

NOW = 1_700_000_000.0


def result(title: str, failed: bool, *, bang: bool = False, message: str = "m") -> PromiseResult:
    return PromiseResult(
        title=title,
        name=f"{title}.py",
        path=f"/p/etc/plugin/{title}.py",
        execution_time=0.5,
        type="Test Result",
        failed=failed,
        date=format_date(NOW),
        message=message,
        bang=bang,
    )


def cache(**changes) -> CacheEntry:
    return CacheEntry(module_file="/p/etc/plugin/a.py", module_file_mtime=1.0, **changes)


@pytest.mark.parametrize(
    ("mode", "entry", "has_result", "expected"),
    [
        (TEST, None, False, "run"),  # never seen: run
        (ANOMALY, None, True, "run"),
        (TEST, cache(next_run_after=NOW + 60), True, "run"),  # test mode is forced
        (ANOMALY, cache(next_run_after=NOW + 60), True, "reuse"),  # not due yet
        (ANOMALY, cache(next_run_after=NOW + 60), False, "run"),  # nothing to reuse
        (ANOMALY, cache(next_run_after=NOW - 1), True, "run"),  # due
        (ANOMALY, cache(modes=(TEST,)), True, "skip"),  # takes no part in anomaly
        (TEST, cache(modes=(ANOMALY,)), True, "skip"),
    ],
)
def test_decide(mode, entry, has_result, expected) -> None:
    assert decide(mode, entry, NOW, has_result) is Decision(expected)


def test_cache_only_describes_its_file_version() -> None:
    promise = PromiseFile("a.py", Path("/p/etc/plugin/a.py"), plugin=True)
    assert cache_is_current(cache(), promise, 1.0)
    assert not cache_is_current(cache(), promise, 2.0)  # the file was edited
    other = PromiseFile("b.py", Path("/p/etc/plugin/b.py"), plugin=True)
    assert not cache_is_current(cache(), other, 1.0)


def test_cache_round_trip_keeps_reference_keys_and_bounded_history() -> None:
    entry = cache(modes=(ANOMALY,), periodicity=5.0, next_run_after=NOW + 300)
    entry.history = [[True, f"run {i}", "d"] for i in range(25)]
    data = entry.to_json(NOW)
    assert data["is_tested"] is False and data["is_anomaly_detected"] is True
    assert {"periodicity", "next_run_after", "timestamp", "module_file", "module_file_mtime"} <= (
        data.keys()
    )
    back = CacheEntry.from_json(json.loads(json.dumps(data)))
    assert back.modes == (ANOMALY,)
    assert back.periodicity == 5.0
    assert len(back.history) == 10 and back.history[-1][1] == "run 24"


@pytest.mark.parametrize(
    ("mode", "runs", "failed"),
    [
        (TEST, [[False, "", "d"], [True, "boom", "d"]], True),
        (TEST, [[True, "", "d"], [False, "ok", "d"]], False),
        (ANOMALY, [[True, "", "d"], [True, "boom", "d"]], False),  # only two failures
        (ANOMALY, [[True, "", "d"], [True, "", "d"], [True, "boom", "d"]], True),
        (ANOMALY, [[True, "", "d"], [False, "", "d"], [True, "boom", "d"]], False),
    ],
)
def test_legacy_verdict(mode, runs, failed) -> None:
    assert legacy_verdict(mode, runs) == (failed, runs[-1][1])


def test_truncate_keeps_the_end() -> None:
    assert truncate("short") == "short"
    assert truncate(None) is None
    long = "x" * 6000 + "END"
    assert truncate(long) == "..." + long[-5000:]
    assert len(truncate(long)) == 5003


def test_result_json_uses_reference_field_names() -> None:
    data = result("check", failed=True).to_json()
    assert data == {
        "title": "check",
        "name": "check.py",
        "path": "/p/etc/plugin/check.py",
        "execution-time": 0.5,
        "result": {
            "type": "Test Result",
            "failed": True,
            "date": "2023-11-14T22:13:20+0000",
            "message": "m",
        },
    }
    assert PromiseResult.from_json(data) == result("check", failed=True)


def test_report_names_the_first_failure_and_the_first_bang() -> None:
    report = PromiseReport(
        (
            result("ok", False),
            result("first", True, message="port closed"),
            result("second", True, bang=True),
        )
    )
    assert report.failed
    assert [r.title for r in report.failures] == ["first", "second"]
    assert report.error_message == "Promise 'first.py' failed with output: port closed"
    assert report.bang_message == "Promise second is failing"
    empty = PromiseReport((result("ok", False),))
    assert not empty.failed and empty.error_message is None and empty.bang_message is None


def test_discover_plugins_first_sorted_and_filters(tmp_path: Path, caplog) -> None:
    plugin, legacy = tmp_path / "etc/plugin", tmp_path / "etc/promise"
    plugin.mkdir(parents=True)
    legacy.mkdir(parents=True)
    for name in ("b.py", "a.py", "__init__.py", "__init__.pyc", "notes.txt"):
        (plugin / name).write_text("")
    (plugin / "monitor-httpd-listening-on-tcp.py").write_text(
        "from slapos.grid.promise.generic import GenericPromise\n"
    )
    (plugin / "exec-from-file.py").write_text(  # promise.plugin's `file` option
        "import sys\nsys.path[0:0] = (\n  '/eggs',\n)\nexec(_('/srv/promise.py'))\n"
    )
    for name, mode in (("z", 0o755), ("y", 0o755), ("not-executable", 0o644)):
        (legacy / name).write_text("#!/bin/sh\n")
        (legacy / name).chmod(mode)
    (legacy / "dir").mkdir()
    with caplog.at_level(logging.WARNING):
        found = discover(tmp_path)
    assert [(p.title, p.plugin, p.generic) for p in found] == [
        ("a", True, False),
        ("b", True, False),
        ("exec-from-file", True, True),
        ("monitor-httpd-listening-on-tcp", True, True),  # the reference takes any *.py
        ("y", False, False),
        ("z", False, False),
    ]
    assert "Bad promise file" in caplog.text and "not-executable" in caplog.text
    assert discover(tmp_path / "missing") == []


def test_last_results_reads_files_and_skips_garbage(tmp_path: Path) -> None:
    for title in ("b", "a"):
        path = PartitionPaths(tmp_path).promise_result(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result(title, title == "b").to_json()))
    PartitionPaths(tmp_path).promise_result("broken").write_text("{not json")
    assert [(r.title, r.failed) for r in last_results(tmp_path)] == [("a", False), ("b", True)]
    assert last_results(tmp_path / "nothing") == []


# --------------------------------------------------------------------------- runner


def run_plugin(tmp_path: Path, source: str, mode: str = TEST, history=()) -> Verdict:
    path = tmp_path / "etc" / "plugin" / "check.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    request = {
        "path": str(path),
        "mode": mode,
        "date": "D",
        "config": {"title": "check", "port": "8080"},
        "history": [list(run) for run in history],
    }
    return promise_runner.run(request)


def test_runner_logged_error_is_a_failure(tmp_path: Path) -> None:
    verdict = run_plugin(
        tmp_path,
        "class RunPromise:\n"
        "    periodicity = 7\n"
        "    def __init__(self, config, logger):\n"
        "        self.config, self.logger = config, logger\n"
        "    def sense(self):\n"
        "        self.logger.info('checking %s', self.config['port'])\n"
        "        self.logger.error('port closed')\n",
    )
    assert verdict.failed is True
    assert verdict.message == "port closed"
    assert verdict.sensed == (True, "port closed", "D")
    assert verdict.periodicity == 7.0
    assert verdict.modes == ("test", "anomaly")


def test_runner_success_message_is_every_line(tmp_path: Path) -> None:
    verdict = run_plugin(
        tmp_path,
        "from slapgrid.node.promises.plugin_runner import Promise\n"
        "class RunPromise(Promise):\n"
        "    def sense(self):\n"
        "        self.logger.info('one')\n"
        "        self.logger.warning('two')\n",
    )
    assert (verdict.failed, verdict.message) == (False, "one\ntwo")


def test_runner_exception_and_missing_class_are_failures(tmp_path: Path) -> None:
    verdict = run_plugin(
        tmp_path,
        "from slapgrid.node.promises.plugin_runner import Promise\n"
        "class RunPromise(Promise):\n"
        "    def sense(self):\n"
        "        raise RuntimeError('no database')\n",
    )
    assert verdict.failed is True
    assert verdict.message == "Error: RuntimeError: no database"
    verdict = run_plugin(tmp_path, "x = 1\n")
    assert verdict.failed is True and "no RunPromise class" in (verdict.message or "")
    verdict = run_plugin(tmp_path, "def broken(:\n")
    assert verdict.failed is True and "SyntaxError" in (verdict.message or "")


def test_runner_skips_a_mode_the_promise_does_not_take_part_in(tmp_path: Path) -> None:
    verdict = run_plugin(
        tmp_path,
        "from slapgrid.node.promises.plugin_runner import Promise\n"
        "class RunPromise(Promise):\n"
        "    modes = ('test',)\n"
        "    def sense(self):\n"
        "        raise AssertionError('must not run')\n",
        mode=ANOMALY,
    )
    assert verdict.ran is False
    assert verdict.modes == ("test",)


def test_runner_custom_anomaly_sees_history(tmp_path: Path) -> None:
    source = (
        "from slapgrid.node.promises.plugin_runner import Promise\n"
        "class RunPromise(Promise):\n"
        "    bang_on_failure = True\n"
        "    def sense(self):\n"
        "        self.logger.error('slow')\n"
        "    def anomaly(self, runs):\n"
        "        last = runs[-3:]\n"
        "        return len(last) == 3 and all(r.failed for r in last), f'{len(runs)} runs'\n"
    )
    verdict = run_plugin(tmp_path, source, ANOMALY, history=[(True, "slow", "d")])
    assert (verdict.failed, verdict.message) == (False, "2 runs")
    assert verdict.bang_on_failure is True
    history = [(True, "slow", "d"), (True, "slow", "d")]
    verdict = run_plugin(tmp_path, source, ANOMALY, history=history)
    assert (verdict.failed, verdict.message) == (True, "3 runs")
    # test mode keeps the default verdict: this run's finding
    assert run_plugin(tmp_path, source, TEST).failed is True


def anomaly(failed: bool = False) -> PromiseResult:
    return replace(result("a", failed), type="Anomaly Result")


@pytest.mark.parametrize(
    ("stored", "checked_at", "fresh_after", "expected"),
    [
        (result("a", False), NOW, None, True),  # nothing known of the services: as before
        (anomaly(), NOW, NOW - 10, True),  # a periodic success since the last start
        (anomaly(), NOW, NOW, True),
        (anomaly(), NOW - 0.5, NOW, False),  # checked before the services (re)started
        (anomaly(), NOW, math.inf, False),  # a service is down: nothing stands for it
        (result("a", False), NOW, NOW - 10, False),  # the test right after a (re)start
        (anomaly(failed=True), NOW, NOW - 10, False),  # a failure is checked again
    ],
)
def test_still_fresh(stored, checked_at, fresh_after, expected) -> None:  # type: ignore[no-untyped-def]
    assert still_fresh(stored, cache(checked_at=checked_at), fresh_after) is expected
    assert still_fresh(stored, None, fresh_after) is (fresh_after is None)


def test_result_age() -> None:
    assert result("a", False).age(NOW + 42.5) == 42.5
    assert result("a", False).age(NOW - 5) == 0.0  # a clock moved back: not negative
    assert replace(result("a", False), date="yesterday").age(NOW) is None
    assert CacheEntry.from_json({**cache().to_json(NOW), "timestamp": NOW}).checked_at == NOW


def test_log_report_says_cached_age_and_tolerated_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fresh = result("fresh", False, message="up")
    cached = replace(result("cached", False, message="up"), reused=True)
    tolerated = replace(result("legacy", False, message="refused"), tolerated=True)
    failing = replace(result("down", True, message="refused"), reused=True)
    with caplog.at_level(logging.INFO, logger="slapgrid.node.promises.run"):
        log_report(PromiseReport((fresh, cached, tolerated, failing)), "p0")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    age = lines[1][1].split("cached, ")[1].split(" s old")[0]
    assert int(age) >= 0
    assert lines == [
        ("INFO", "Promise fresh kept: up"),
        ("INFO", f"Promise cached kept (cached, {age} s old): up"),
        ("WARNING", "Promise legacy failed this run, not yet an anomaly: refused"),
        ("ERROR", f"Promise down still failing (cached, {age} s old): refused"),
    ]
