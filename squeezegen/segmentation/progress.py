"""A light progress bar on stderr: images done, img/s, ETA, failures (and images skipped
because a previous run wrote them).

On a terminal it redraws one line (at most 5 times a second); elsewhere (a log file, CI) it
prints a plain line every `every` seconds, so logs stay readable. Other messages go through
`write`, which clears the bar first.
"""
from __future__ import annotations

import sys
import threading
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(self, total: int, stream=None, enabled: bool = True, every: float = 30.0):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = 0.2 if self.tty else every
        self.start = time.monotonic()
        self._last = self.start
        self._shown = False
        self._lock = threading.Lock()

    def line(self, done: int, failed: int, skipped: int = 0) -> str:
        elapsed = max(1e-9, time.monotonic() - self.start)
        rate = done / elapsed
        seen = done + failed + skipped
        eta = _clock((self.total - seen) / rate) if rate > 0 else "?"
        pct = 100.0 * seen / self.total if self.total else 100.0
        text = (f"{seen:,}/{self.total:,} ({pct:.0f}%), {rate:,.1f} img/s, ETA {eta}, "
                f"{failed:,} failed" + (f", {skipped:,} already done" if skipped else ""))
        if not self.tty:
            return "segment: " + text
        width = 24
        filled = int(width * pct / 100)
        return f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K"

    def update(self, done: int, failed: int, skipped: int = 0, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.every:
                return
            self._last = now
            self.stream.write(self.line(done, failed, skipped) + ("" if self.tty else "\n"))
            self.stream.flush()
            self._shown = True

    def write(self, message: str) -> None:
        """A line of its own (a failure, a warning), above the bar."""
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\r\x1b[K")
            self.stream.write(message + "\n")
            self._shown = False
            self._last = 0.0 if self.tty else self._last
            self.stream.flush()

    def close(self, done: int, failed: int, skipped: int = 0) -> None:
        if self.enabled and self.tty:
            self.update(done, failed, skipped, force=True)
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()
