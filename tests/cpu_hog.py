"""Keep CPU cores busy while a command runs, to find tests that only pass on an idle machine.

    python -m tests.cpu_hog -- .venv/bin/pytest tests/test_e2e_tokens.py   # 1 core busy
    python -m tests.cpu_hog --cores 2 -- make test
    python -m tests.cpu_hog --seconds 60                                   # no command

Each busy core is a process spinning at normal priority. The exit status is the
command's. A test that fails under this has a timing margin a loaded 2-core CI
machine breaks: wait on an event or poll with a generous deadline instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SPIN = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cpu_hog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=1, help="busy cores (default 1)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="without a command: how long (default: until interrupted)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command

    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(options.cores)]
    print(f"cpu_hog: {options.cores} busy core(s), pids {[h.pid for h in hogs]}",
          file=sys.stderr, flush=True)
    try:
        if command:
            return subprocess.call(command)
        if options.seconds is None:
            while True:
                time.sleep(3600)
        time.sleep(options.seconds)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


if __name__ == "__main__":
    sys.exit(main())
