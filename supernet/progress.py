"""Progress that reads well in both places it ends up: a terminal and a log file.

On a terminal, a tqdm bar. Anywhere else (CI, ``| tee log``, a file) a tqdm bar is one long line
of carriage-return updates (about 1,500 per LUT build), so instead a plain line is printed at
every ``every_pct`` percent or every ``every_s`` seconds, whichever comes first.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

__all__ = ["progress_bar", "LineProgress"]


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class LineProgress:
    """tqdm's small API (``update``, ``n``, ``total``, ``set_postfix[_str]``, ``write``,
    ``refresh``, ``close``) printing whole lines, for streams that are not terminals."""

    def __init__(self, total: Optional[int], *, desc: str, unit: str, initial: int = 0,
                 file: Optional[TextIO] = None, every_pct: float = 10.0, every_s: float = 30.0):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file if file is not None else sys.stderr
        self.every_pct, self.every_s = every_pct, every_s
        self.postfix = ""
        self._t0 = self._last_t = time.monotonic()
        self._n0 = initial
        self._last_n: Optional[int] = None
        self._closed = False
        self._print()

    def _pct(self, n: int) -> float:
        return 100.0 * n / self.total if self.total else 0.0

    def _print(self) -> None:
        now = time.monotonic()
        el = now - self._t0
        if self.total:
            # floor, not round: 1797/4500 is 39%, so the 40% line is the one at 1800
            text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({int(self._pct(self.n))}%)"
        else:
            text = f"{self.desc}: {self.n} {self.unit}"
        if self.n > self._n0:
            text += f", {_clock(el)} elapsed"
            if self.total and self.n < self.total:
                left = el / (self.n - self._n0) * (self.total - self.n)
                text += f", ~{_clock(left)} left"
        if self.postfix:
            text += f" [{self.postfix}]"
        print(text, file=self.file, flush=True)
        self._last_t, self._last_n = now, self.n

    def refresh(self) -> None:
        """Print a line if a step of ``every_pct`` was crossed or ``every_s`` passed."""
        if self._closed or self.n == self._last_n:
            return
        last = self._last_n if self._last_n is not None else self._n0
        step = self.every_pct
        crossed = bool(self.total) and int(self._pct(self.n) // step) > int(self._pct(last) // step)
        if crossed or time.monotonic() - self._last_t >= self.every_s:
            self._print()

    def update(self, k: int = 1) -> None:
        """Count ``k`` more done (prints when a step or the interval is reached)."""
        self.n += k
        self.refresh()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Text shown in brackets after the count on the next line."""
        self.postfix = s

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kw: Any) -> None:
        """``key=value`` pairs shown in brackets after the count on the next line."""
        items = dict(ordered_dict or {}, **kw)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def write(self, s: str) -> None:
        """A message on its own line (a warning, say)."""
        print(s, file=self.file, flush=True)

    def close(self) -> None:
        """Print the final count (unless just printed); later calls print nothing."""
        if not self._closed and self.n != self._last_n:
            self._print()
        self._closed = True

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: Optional[int], *, desc: str, unit: str, initial: int = 0,
                 file: Optional[TextIO] = None, every_pct: float = 10.0, every_s: float = 30.0,
                 **tqdm_kw: Any):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`.

    ``unit`` names what is counted (``timing``, ``step``, ``arch``) and ``desc`` should say
    how the total comes about (``450 ops x 10 rounds``): the numbers then explain themselves.
    """
    file = file if file is not None else sys.stderr
    if _isatty(file):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file,
                    dynamic_ncols=True, **tqdm_kw)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=file,
                        every_pct=every_pct, every_s=every_s)
