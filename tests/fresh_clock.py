"""A monotonic clock that reads about one second, as on a host booted a second ago.

``time.monotonic()`` counts from boot: on a long-lived machine it is large, on a
freshly booted one it is small, and code that starts a timestamp at 0.0 and
waits for ``now - 0.0 > interval`` only misbehaves on the fresh one (issue #13:
workers never joined ``wsops.workers`` in a host's first hour). Shifting the
clock by a constant keeps every duration right, asyncio's timers included, as
long as it happens before anything reads the clock.

- ``shifted(at)``: the clock functions moved to read ``at`` now (for monkeypatch).
- ``install()``: replace ``time.monotonic`` (and ``monotonic_ns``) in this process.
- ``WSOPS_TEST_CLOCK_AT``: what the clock reads at the start of the run instead of
  1 s (``100000`` plays a host up for a day), or ``real`` to leave it alone.
- ``python -m tests.fresh_clock [daphne options] app``: daphne's own command line
  with the shifted clock; the ``daphne_server`` fixture starts every worker so.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

START = 1.0  # what the clock reads right after it is shifted
SETTING = os.environ.get("WSOPS_TEST_CLOCK_AT", "")


def shifted(at: float = START) -> tuple[Callable[[], float], Callable[[], int], float]:
    """``time.monotonic`` and ``monotonic_ns`` moved to read ``at`` now, and the shift."""
    real, real_ns = time.monotonic, time.monotonic_ns
    offset_ns = real_ns() - int(at * 1e9)
    offset = offset_ns / 1e9
    return (lambda: real() - offset), (lambda: real_ns() - offset_ns), offset


def install(at: float | None = None) -> float:
    """Shift this process' monotonic clock to read ``at`` now (default: 1 s, or
    ``WSOPS_TEST_CLOCK_AT``); return the shift (0 with ``WSOPS_TEST_CLOCK_AT=real``)."""
    if at is None:
        if SETTING == "real":
            return 0.0
        at = float(SETTING or START)
    time.monotonic, time.monotonic_ns, offset = shifted(at)
    return offset


def main() -> None:
    offset = install()
    # Before daphne, Twisted or asyncio read the clock; the tests check this line.
    print(f"fresh_clock: time.monotonic()={time.monotonic():.3f} (host clock minus "
          f"{offset:.0f} s)", file=sys.stderr, flush=True)
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
