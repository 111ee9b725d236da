"""Memory returned to the system when the server goes idle.

glibc keeps the memory freed by request threads in its per-thread arenas (small and medium
allocations: PIL strips, numpy temporaries, JSON bodies), so after bursts of clients resident memory
stays above its warmed-up size and grows with each burst (``bench/api_load.py --bursts 3``; the figures
are in docs/deployment.md). :class:`IdleTrimmer` calls ``malloc_trim(0)`` once the server has had no
request in flight for ``idle_s`` seconds after some activity, which hands those free pages back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

logger = logging.getLogger(__name__)


def malloc_trim() -> bool:
    """Return the free memory of every glibc arena to the system; False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


class Activity:
    """Requests in flight and when the last one ended (updated by the ASGI middleware)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_end = time.monotonic()
        self.since_trim = 0  # requests finished since the last trim

    def enter(self) -> None:
        """A request started."""
        with self._lock:
            self.in_flight += 1

    def leave(self) -> None:
        """A request ended."""
        with self._lock:
            self.in_flight -= 1
            self.last_end = time.monotonic()
            self.since_trim += 1

    def idle_for(self) -> float:
        """Seconds without a request in flight (0 while one is)."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_end

    def take(self) -> int:
        """Requests finished since the last call (and reset the count)."""
        with self._lock:
            count, self.since_trim = self.since_trim, 0
            return count


class IdleTrimmer:
    """A daemon thread that trims the heap (:func:`malloc_trim`) once per quiet spell of ``idle_s``."""

    def __init__(self, activity: Activity, idle_s: float = 2.0, poll_s: float = 0.5) -> None:
        self.activity = activity
        self.idle_s, self.poll_s = idle_s, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-trimmer", daemon=True)
        self.trims = 0

    def start(self) -> IdleTrimmer:
        """Start watching; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.activity.idle_for() >= self.idle_s and self.activity.take():
                started = time.perf_counter()
                if malloc_trim():
                    self.trims += 1
                logger.debug("malloc_trim after a burst: %.1f ms", (time.perf_counter() - started) * 1000)
