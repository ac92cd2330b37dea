"""`python -S deploy/pin.py CPU -- PROGRAM [ARGS…]`: run PROGRAM on one CPU.

supervisord starts the bus (nats-server, a Go binary that cannot pin itself) through this: it
sets the CPU affinity of its own process, then replaces itself with PROGRAM, which keeps it.
Run as a file with `-S`, not as a module: it imports nothing but `os` and `sys`, and costs a few
milliseconds of start. An unknown CPU or a system without affinity leaves PROGRAM unpinned.
"""

import os
import sys


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: pin.py CPU -- PROGRAM [ARGS...]")
    cpu, program = argv[0], argv[2:]
    if cpu.isdigit() and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError as err:  # a CPU this machine does not have: run unpinned
            print(f"pin.py: CPU {cpu} not usable ({err}); running unpinned", file=sys.stderr)
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
