"""Ctrl-C during a one-shot run: stop the children now, mark nothing done, exit 130.

Python hands SIGINT to the main thread as `KeyboardInterrupt`; a run waiting there on its
worker threads would not pass it on, and its buildouts (each in a session of its own, out of
reach of the terminal's signal) would build to their end. So the run works in a thread and
the main thread only waits: on Ctrl-C it sets the run's cancel event, which kills every
running buildout with its process tree and leaves each item for the next run, undone and
not counted as a failure, then re-raises for `main` to say "interrupted" and exit 130.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL = 0.1  # seconds between two looks at the run thread: Ctrl-C is noticed within this


def interruptible(work: Callable[[threading.Event], T]) -> T:
    """`work(cancel)` in a thread; Ctrl-C sets `cancel`, waits for it to end, re-raises."""
    cancel = threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []
    finished: list[bool] = []

    def target() -> None:
        try:
            outcome.append(work(cancel))
        except BaseException as exc:  # handed to the main thread, which reports it
            failure.append(exc)
        finally:
            finished.append(True)

    thread = threading.Thread(target=target, name="run", daemon=True)
    thread.start()
    # sleep, not join: a join interrupted by SIGINT can take a live thread for ended
    while True:
        try:
            while not finished:
                time.sleep(POLL)
            break
        except KeyboardInterrupt:
            cancel.set()  # a second Ctrl-C changes nothing: the children get 1.5 s at most
    thread.join()
    if cancel.is_set():
        raise KeyboardInterrupt
    if failure:
        raise failure[0]
    return outcome[0]
