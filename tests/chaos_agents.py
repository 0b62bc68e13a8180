"""Clients for the chaos test, run as ``python chaos_agents.py ROLE FIFO ID LOGFILE``.

A producer puts "ID:seq" items and appends "seq" to its log after each put returns, so the
log lists exactly the items whose put returned (the one put in progress at a kill may be
in the FIFO without being logged). A consumer appends each item to its log, flushes, and
only then acknowledges it, so an item is delivered twice only if its consumer was killed
between the two: the duplicate's first copy is then the last line of a killed consumer's log.
SIGTERM stops either cleanly.
"""

import signal
import sys

import shmfifo
from procs import AGENT_READY, attach_patiently as attach


def main(role, name, ident, path):
    stopping = []
    handle = []

    def stop(signum, frame):
        stopping.append(signum)
        if handle:
            handle[0].request_stop()

    signal.signal(signal.SIGTERM, stop)
    q = attach(name)
    handle.append(q)
    print(AGENT_READY, flush=True)
    with open(path, "a", buffering=1) as log, q:
        seq = 0
        while not stopping:
            try:
                if role == "producer":
                    q.put(f"{ident}:{seq + 1}")
                    seq += 1
                    log.write(f"{seq}\n")
                else:
                    item = q.get(timeout=0.5)
                    log.write(item + "\n")
                    log.flush()
                    q.ack()
            except (shmfifo.Empty, shmfifo.Full):
                continue
            except (shmfifo.Stopped, shmfifo.FifoClosed):
                break
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
