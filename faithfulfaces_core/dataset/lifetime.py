"""Curation worker processes end with their parent, and SIGTERM stops a build like Ctrl-C.

A spawned worker blocks on its task queue; if the parent is killed (SIGKILL, OOM killer) the
queue never closes, so without this the workers, and the resource tracker that waits for them,
live on as orphans holding the caller's stdout (``build ... | tee`` never ends). On Linux the
kernel sends the worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); everywhere a
watchdog thread also notices the parent pid change and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the watchdog still runs
        pass


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)


def die_with_parent() -> None:
    """Make this process exit as soon as the process that started it is gone (call it first thing)."""
    parent = os.getppid()
    _set_parent_death_signal()
    if os.getppid() != parent or parent == 1:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="die-with-parent", daemon=True).start()


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (``kill``, systemd, a batch scheduler) like Ctrl-C inside the block.

    Off the main thread (where Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
