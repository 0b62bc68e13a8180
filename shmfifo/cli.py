"""The ``shmfifo`` command: one command with subcommands, like ``ip`` or ``systemctl``.

    shmfifo fifo [--name NAME] [--size N] ...        run a FIFO daemon   (insmod fifo.ko)
    shmfifo producer [--fifo NAME] item=a rate=5     run a producer      (insmod producer.ko)
    shmfifo consumer [--fifo NAME] rate=2            run a consumer      (insmod consumer.ko)
    shmfifo status [NAME] [--json] [--watch]         what runs           (lsmod, /sys/module)
    shmfifo set NAME PID rate=R                      change a rate       (writable parameter)
    shmfifo clean NAME                               remove a dead FIFO's names
    shmfifo doctor [--size N] [--item-size B]        can this machine run a FIFO?
    shmfifo bridge SRC DST                           a FIFO to a Redis stream, or back
    shmfifo demo                                     a 10-second demo on defaults

Exit codes: 0 success, 1 runtime error, 2 usage error, 3 FIFO not found (or its daemon is
not running). Stop any process with kill (SIGTERM) or Ctrl-C (SIGINT): it exits 0.
"""

import argparse
import json
import math
import os
import re
import signal
import sys

from . import __version__, log as logs, names
from .errors import (CorruptSegment, FifoExists, FifoNotFound, ItemTooLarge, ShmfifoError,
                     UsageError)
from .pacing import parse_rate
from .pipes import RecordTooLong
from .sizes import parse_size
from .ring import accelerator

__all__ = ["main", "run", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_FOUND"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
MAX_INTERVAL = 86400.0     # a day between redraws; longer overflows the terminal's timers

EXIT_CODES = """exit codes:
  0  success (also after a stop by SIGTERM, SIGINT or SIGHUP)
  1  runtime error (a daemon of that name already runs, a FIFO of another user, ...)
  2  usage error (bad argument, item too large, bad name)
  3  FIFO not found, or its daemon is not running"""


DOCTOR_EXIT_CODES = """exit codes:
  0  every check is ok
  1  a problem was found (each is printed with its fix)
  2  usage error (bad argument)"""


class _Usage(Exception):
    """A command-line mistake: printed as one line, exit 2."""


# argparse prefixes a type's message with "argument --size: "; ours already names the argument.
_NAMED_TWICE = re.compile(r"\Aargument ([^:]+): [-\w]+: (.*)", re.DOTALL)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _Usage(_NAMED_TWICE.sub(r"\1: \2", message))


def _positive_int(arg):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"--{arg}: {text!r} is not allowed; use a whole number of 1 or more")
        return value
    return parse


def _size(arg):
    def parse(text):
        try:
            return parse_size(text, f"--{arg}")
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def _seconds(arg):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(
                f"--{arg}: {text!r} is not allowed; use a number of seconds, 0 or more")
        return value
    return parse


def _rate(text):
    try:
        return parse_rate(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _name(text):
    try:
        return names.validate(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _port(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"--metrics-port: {text!r} is not allowed; use a TCP port from 0 to 65535 (0 "
            f"picks a free one)")
    return value


def _mode(text):
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777 or value & 0o600 != 0o600:
        raise argparse.ArgumentTypeError(
            f"--mode: {text!r} is not allowed; use octal permissions that let the owner read "
            f"and write, such as 600 or 660")
    return value


def _add_verbosity(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_const", const=logs.VERBOSE,
                   dest="verbosity", default=logs.NORMAL, help="log every put and take")
    g.add_argument("-q", "--quiet", action="store_const", const=logs.QUIET, dest="verbosity",
                   help="log only warnings and errors")


def build_parser():
    parser = _Parser(
        prog="shmfifo",
        description="A named, bounded, crash-safe FIFO between processes, on POSIX shared "
                    "memory and semaphores: the producer-consumer kernel-module lab, in user "
                    "space.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"shmfifo {__version__}\naccelerator: {accelerator()}",
                        help="print the version and which accelerator runs put and get "
                             "(C, or none: pure Python), then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("fifo", help="run a FIFO daemon in the foreground (insmod fifo.ko)",
                       formatter_class=fmt, epilog=EXIT_CODES,
                       description="Create the FIFO (a shared-memory ring and the semaphores "
                                   "empty, fill, mutex) and keep it consistent until SIGTERM or "
                                   "Ctrl-C; then producers stop, consumers drain, and every "
                                   "name is removed. A FIFO whose daemon died is adopted with "
                                   "its items.")
    p.add_argument("--name", type=_name, default=names.DEFAULT_NAME,
                   help=f"FIFO name (default: {names.DEFAULT_NAME})")
    p.add_argument("--size", type=_positive_int("size"), default=None,
                   help="capacity in items (default: 32)")
    p.add_argument("--item-size", type=_size("item-size"), default=None,
                   help="largest item in bytes, after encoding; K, M, G: powers of 1024, as "
                        "in 64K or 1M (default: 128)")
    p.add_argument("--max-clients", type=_positive_int("max-clients"), default=None,
                   help="most producers and consumers attached at once (default: 32)")
    p.add_argument("--batch", type=_positive_int("batch"), default=None,
                   help="largest get_many batch (default: the size, at most 64)")
    p.add_argument("--in-flight", type=_positive_int("in-flight"), default=None,
                   metavar="N",
                   help="most items consumers may hold taken and not yet acknowledged, all "
                        "together (each keeps its slot; default: every client a full batch, "
                        "within a quarter of the queue's bytes or 1 MiB)")
    p.add_argument("--split-locks", action="store_true", default=None,
                   help="separate put and take locks instead of the lab's single mutex "
                        "(faster: producers and consumers no longer contend)")
    p.add_argument("--mode", type=_mode, default=0o600,
                   help="permissions of the POSIX objects, octal (default: 600, owner only; "
                        "660 shares with the group)")
    p.add_argument("--keep", action="store_true",
                   help="on stop, leave the segment and semaphores with their items for a "
                        "later daemon to adopt, instead of draining and removing them")
    p.add_argument("--drain-timeout", type=_seconds("drain-timeout"), default=5.0,
                   help="on stop, how long consumers may drain what is left (default: 5)")
    p.add_argument("--kill-stopped", type=_seconds("kill-stopped"), default=None,
                   metavar="SECONDS",
                   help="SIGKILL a stopped (SIGSTOP) client that blocks a recovery, or holds "
                        "a lock, for this long (default: only report it)")
    p.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="serve Prometheus metrics over HTTP at /metrics on this port (0: a "
                        "free one; the log says which), read from the FIFO at each scrape. "
                        "The port is bound before the FIFO is created: if it is taken, or "
                        "the prometheus_client library is missing (pip install "
                        "'shmfifo[metrics]'), the daemon exits 1 having created nothing")
    p.add_argument("--metrics-addr", default=None, metavar="ADDR",
                   help="with --metrics-port: the address to listen on (default: 127.0.0.1, "
                        "this machine only; 0.0.0.0 or :: for every interface)")
    p.add_argument("--no-recovery", action="store_true", help=argparse.SUPPRESS)
    _add_verbosity(p)

    for role in ("producer", "consumer"):
        lab = "insmod producer.ko item=a rate=5" if role == "producer" else \
            "insmod consumer.ko rate=2"
        p = sub.add_parser(role, formatter_class=fmt, epilog=EXIT_CODES,
                           help=f"run a {role} ({lab.split()[1]})",
                           description=f"Attach to a FIFO by name and "
                           f"{'put ITEM' if role == 'producer' else 'take items'} at RATE items "
                           f"per second until stopped (SIGTERM or Ctrl-C). Parameters are "
                           f"written as insmod writes them ({lab.split(' ', 2)[2]}) or as "
                           f"options; rate is a positive number (fractions allowed) or "
                           f"'max'.")
        p.add_argument("params", nargs="*", metavar="PARAM=VALUE",
                       help="item=VALUE, rate=R, count=N" if role == "producer" else
                       "rate=R, count=N")
        p.add_argument("--fifo", type=_name, default=names.DEFAULT_NAME,
                       help=f"FIFO name (default: {names.DEFAULT_NAME})")
        if role == "producer":
            p.add_argument("--item", default=None, help="the item to put (a string)")
            p.add_argument("--stdin", action="store_true",
                           help="put each line of standard input (without its newline) "
                                "instead of ITEM, in order, and exit 0 at its end; a line "
                                "that is UTF-8 is put as a str, any other as bytes; rate "
                                "defaults to max")
        else:
            p.add_argument("--raw", action="store_true",
                           help="write each item's bytes (a str as UTF-8) and a newline to "
                                "stdout, and nothing else; rate defaults to max")
        p.add_argument("-0", "--null", action="store_true",
                       help="with --stdin/--raw: records end with NUL instead of a newline")
        p.add_argument("--rate", type=_rate, default=argparse.SUPPRESS,
                       help="items per second, or max (default: 1; max with --stdin or "
                            "--raw)")
        p.add_argument("--count", type=_positive_int("count"), default=None,
                       help="stop after N items")
        if role == "consumer":
            p.add_argument("--json", action="store_true",
                           help="one JSON object per item: item, type, producer, seq, "
                                "latency_us (a bytes item in base64, with \"encoding\": "
                                "\"base64\")")
            p.add_argument("--allow-pickle", action="store_true",
                           help="unpickle pickled items even when users other than you can "
                                "write to the FIFO (unpickling runs code the writer chose); "
                                "without it such items are shown, not unpickled")
        p.add_argument("--shared", action="store_true",
                       help="attach to a FIFO that belongs to another user (shared on "
                            "purpose); by default only your own FIFOs are used")
        _add_verbosity(p)

    p = sub.add_parser("status", formatter_class=fmt, epilog=EXIT_CODES,
                       help="show FIFOs and their clients (lsmod, /sys/module/*/parameters)",
                       description="Show a FIFO's geometry, items, semaphore values, totals, "
                                   "daemon and every client with its role, pid, parameters "
                                   "and count. Without NAME, list every FIFO on this machine.")
    p.add_argument("name", nargs="?", type=_name, help="FIFO name (default: list all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--prometheus", action="store_true",
                   help="print Prometheus metrics once, the same as fifo --metrics-port "
                        "serves (for node_exporter's textfile collector); without NAME, of "
                        "every FIFO. A FIFO that is gone or unreadable is shmfifo_up 0 in "
                        "the text, exit 0. Needs prometheus_client (pip install "
                        "'shmfifo[metrics]'; exit 1 without it)")
    p.add_argument("--watch", action="store_true",
                   help="a live view like top, redrawn in place once a second: fill bar, "
                        "puts and takes per second, the daemon, each client's configured "
                        "and achieved rate (q or Ctrl-C to quit). Needs NAME unless only "
                        "one FIFO exists. When output is not a terminal, prints a plain "
                        "snapshot every interval instead")
    p.add_argument("--interval", type=_seconds("interval"), default=None, metavar="SECONDS",
                   help="with --watch: seconds between redraws (default: 1; rates are "
                        "always measured over the last second or more)")
    p.add_argument("--count", type=_positive_int("count"), default=None, metavar="N",
                   help="with --watch: stop after N redraws or snapshots (default: until "
                        "q, Ctrl-C or the FIFO is removed)")

    p = sub.add_parser("set", formatter_class=fmt, epilog=EXIT_CODES,
                       help="change a running client's rate (a writable module parameter)",
                       description="Change the rate of a running producer or consumer, like "
                                   "writing a module parameter: status shows it at once, and "
                                   "the client's loop picks it up at its next deadline (a "
                                   "client blocked on a full or empty FIFO, after that "
                                   "operation). A bad rate or a pid that is not a client of "
                                   "the FIFO is a usage error, and nothing changes.")
    p.add_argument("name", type=_name, help="FIFO name")
    p.add_argument("pid", type=_positive_int("pid"), help="the client's pid (see status)")
    p.add_argument("params", nargs="+", metavar="rate=R",
                   help="the new rate: items per second (fractions allowed), or max")

    p = sub.add_parser("clean", formatter_class=fmt, epilog=EXIT_CODES,
                       help="remove the names of a FIFO whose processes are all dead",
                       description="Remove the segment and semaphores of a FIFO whose daemon "
                                   "and clients are all dead. Refuses, naming who is alive, "
                                   "otherwise.")
    p.add_argument("name", type=_name, help="FIFO name")
    p.add_argument("--force", action="store_true",
                   help="also remove a segment that is unreadable (corrupt or foreign), if "
                        "no process holds a lease on it")

    p = sub.add_parser("doctor", formatter_class=fmt, epilog=DOCTOR_EXIT_CODES,
                       help="check that this machine can run a FIFO, each problem with its fix",
                       description="One line per check: /dev/shm (a writable tmpfs with room "
                                   "for a FIFO of the given options), systemd-logind's "
                                   "RemoveIPC (which removes a user's FIFOs at logout), named "
                                   "semaphores, the C accelerator and the Python version. "
                                   "Each problem is printed with its fix.")
    p.add_argument("--size", type=_positive_int("size"), default=None,
                   help="check for room for a FIFO of this capacity (default: 32, as "
                        "shmfifo fifo)")
    p.add_argument("--item-size", type=_size("item-size"), default=None,
                   help="... and this item size in bytes, or with K, M or G (default: 128)")
    p.add_argument("--max-clients", type=_positive_int("max-clients"), default=None,
                   help="... and this many clients (default: 32)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list of {name, ok, detail, fix}")

    p = sub.add_parser("bridge", formatter_class=fmt, epilog=EXIT_CODES,
                       help="carry items between a FIFO and a Redis stream (across hosts)",
                       description="Carry items from SRC to DST, one of them a FIFO name and "
                                   "the other a URL redis://[user:password@]host[:port][/db]/"
                                   "STREAM (rediss:// for TLS; the password may instead be in "
                                   "REDISCLI_AUTH, which keeps it out of the process list). "
                                   "FIFO -> stream acknowledges an item in the FIFO only once "
                                   "Redis has it; stream -> FIFO reads in a consumer group "
                                   "and acknowledges an entry only once it is in the FIFO. "
                                   "So a kill -9 of either loses nothing; re-sent items may "
                                   "arrive twice, and are counted. Needs redis-py (pip "
                                   "install 'shmfifo[redis]').")
    p.add_argument("src", metavar="SRC", help="a FIFO name, or a redis:// URL")
    p.add_argument("dst", metavar="DST", help="a redis:// URL, or a FIFO name")
    p.add_argument("--group", default=None,
                   help="the consumer group that readers of the stream share (default: "
                        "shmfifo); the sending bridge creates it, so that nothing is trimmed "
                        "before the group has read it")
    p.add_argument("--maxlen", type=_positive_int("maxlen"), default=None,
                   help="FIFO -> stream: the most entries the stream holds; only entries "
                        "every group has acknowledged are trimmed, and when none can be, the "
                        "bridge waits and the items stay in the FIFO (default: 100000)")
    p.add_argument("--batch", type=_positive_int("batch"), default=None,
                   help="the most items per round trip to Redis (default: 256; FIFO -> "
                        "stream: at most the FIFO's batch size)")
    p.add_argument("--claim-idle", type=_seconds("claim-idle"), default=None,
                   help="stream -> FIFO: take over entries another bridge of the group read "
                        "and has not acknowledged for this many seconds (default: 30); those "
                        "of a bridge of this host whose process is gone are taken at once")
    p.add_argument("--pack", type=_positive_int("pack"), default=None,
                   help="FIFO -> stream: put up to this many items in one stream entry "
                        "(default: 1, an entry per item, which any Redis client can read). "
                        "Redis then spends its time per entry, not per item: several times "
                        "the items/s; --maxlen then counts entries. The receiving bridge "
                        "reads either")
    p.add_argument("--host-name", default=None,
                   help="FIFO -> stream: the name this host goes by in the items' origin "
                        "(default: its host name, socket.gethostname())")
    p.add_argument("--shared", action="store_true",
                   help="accept a FIFO of another user (see attach(shared=True))")
    _add_verbosity(p)

    p = sub.add_parser("demo", formatter_class=fmt, epilog=EXIT_CODES,
                       help="a daemon, two producers and a consumer for about 10 seconds",
                       description="Start a daemon, two producers with different items and "
                                   "rates and one consumer, as separate processes, and show "
                                   "them live (status --watch); part-way the consumer is "
                                   "slowed with set, so the FIFO fills up. Then stop "
                                   "everything in order and summarise the items produced and "
                                   "consumed per producer. q or Ctrl-C stops it early, just "
                                   "as cleanly. On a non-terminal the view is plain "
                                   "snapshots.")
    p.add_argument("--seconds", type=_seconds("seconds"), default=10.0,
                   help="how long to run (default: 10)")
    return parser


_PARAMS = {"producer": ("item", "rate", "count"), "consumer": ("rate", "count"),
           "set": ("rate",)}


def _parse_params(command, args):
    """Fold insmod-style key=value parameters into the options, checking each."""
    allowed = _PARAMS[command]
    for text in args.params:
        key, sep, value = text.partition("=")
        if not sep:
            raise _Usage(f"parameter {text!r} is not KEY=VALUE (allowed: "
                         f"{', '.join(k + '=' for k in allowed)})")
        if key not in allowed:
            raise _Usage(f"unknown parameter {key!r} (allowed: {', '.join(allowed)})")
        try:
            if key == "rate":
                parsed = _rate(value)
            elif key == "count":
                parsed = _positive_int("count")(value)
            else:
                parsed = value
        except argparse.ArgumentTypeError as error:
            raise _Usage(str(error).replace("--count", "count")) from None
        setattr(args, key, parsed)
        args.explicit = getattr(args, "explicit", set()) | {key}


def _cmd_fifo(args):
    from .daemon import FifoDaemon
    from .notify import Notifier
    log = logs.setup("fifo", args.verbosity)
    exporter = _metrics_exporter(args, log)
    daemon = FifoDaemon(args.name, capacity=args.size, item_size=args.item_size,
                        max_clients=args.max_clients, batch_max=args.batch,
                        split_locks=args.split_locks, in_flight=args.in_flight,
                        mode=args.mode, keep=args.keep,
                        drain_timeout=args.drain_timeout, kill_stopped=args.kill_stopped,
                        recovery=not args.no_recovery, log=log, notify=Notifier())
    # SIGHUP too: a closed terminal stops the daemon as cleanly as Ctrl-C (names removed).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: daemon.request_stop())
    daemon.start()
    g = daemon.geometry
    log.info("ready: FIFO %r, %d slots of %d bytes, %d clients max, %s, mode %04o, "
             "accelerator: %s", args.name, g.capacity, g.item_size, g.max_clients,
             daemon.locking, daemon.seg.mode, accelerator())
    report = daemon.serve_forever()
    if exporter is not None:
        exporter.close()
    return EXIT_OK if report is not None else EXIT_ERROR


def _pipe_options(args, pipe, option):
    """The rate (default 1, or max in pipe mode) and the record separator."""
    if args.null and not pipe:
        raise _Usage(f"-0/--null goes with {option}")
    if not hasattr(args, "rate"):
        args.rate = None if pipe else 1.0
    from .pipes import NEWLINE, NUL
    return NUL if args.null else NEWLINE


def _metrics_exporter(args, log):
    """Start serving the metrics of ``--metrics-port``: before the FIFO exists, so that a
    port in use stops the daemon having created nothing."""
    if args.metrics_port is None:
        if args.metrics_addr is not None:
            raise _Usage("--metrics-addr goes with --metrics-port")
        return None
    from . import metrics
    exporter = metrics.serve(args.name, args.metrics_port,
                             args.metrics_addr or metrics.DEFAULT_ADDR)
    log.info("metrics at %s", exporter.url)
    return exporter


def _cmd_producer(args):
    from .producer import run_producer, run_stdin_producer
    _parse_params("producer", args)
    separator = _pipe_options(args, args.stdin, "--stdin")
    log = logs.setup("producer", args.verbosity)
    if args.stdin:
        if args.item is not None:
            raise _Usage("item= and --stdin do not go together: the items come from stdin")
        return run_stdin_producer(args.fifo, args.rate, separator=separator, count=args.count,
                                  log=log, shared=args.shared)
    if args.item is None:
        raise _Usage("missing the item to put: give item=VALUE (or --item VALUE), or "
                     "--stdin")
    if args.item == "":
        raise _Usage("item: '' is not allowed; the item must not be empty")
    return run_producer(args.fifo, args.item, args.rate, count=args.count,
                        log=log, shared=args.shared)


def _cmd_consumer(args):
    from .consumer import JSON, RAW, TEXT, run_consumer
    _parse_params("consumer", args)
    separator = _pipe_options(args, args.raw, "--raw")
    if args.raw and args.json:
        raise _Usage("--raw and --json do not go together")
    log = logs.setup("consumer", args.verbosity)
    form = RAW if args.raw else JSON if args.json else TEXT
    return run_consumer(args.fifo, args.rate, count=args.count, form=form,
                        separator=separator, log=log, shared=args.shared,
                        allow_pickle=args.allow_pickle)


def _cmd_status(args):
    from . import status
    if args.interval is not None or args.count is not None:
        if not args.watch:
            raise _Usage("--interval and --count go with --watch")
        if args.interval is not None and not 0.1 <= args.interval <= MAX_INTERVAL:
            raise _Usage(f"--interval: {args.interval:g} is not allowed; use 0.1 to "
                         f"{MAX_INTERVAL:g} seconds")
    if args.prometheus:
        from .metrics import exposition
        if args.json or args.watch:
            raise _Usage(f"--prometheus and --{'json' if args.json else 'watch'} do not go "
                         f"together")
        sys.stdout.write(exposition(args.name))
        return EXIT_OK
    if args.watch:
        from .watch import watch
        if args.json:
            raise _Usage("--json and --watch do not go together")
        name = args.name
        if name is None:
            found = names.list_fifos()
            if not found:
                print("shmfifo status: error: no FIFO to watch on this machine (start one "
                      "with: shmfifo fifo)", file=sys.stderr)
                return EXIT_NOT_FOUND
            if len(found) > 1:
                raise _Usage(f"--watch needs a NAME: there are {len(found)} FIFOs "
                             f"({', '.join(sorted(found))})")
            name = found[0]
        return watch(name, interval=args.interval or 1.0, count=args.count)
    if args.name:
        st = status.snapshot(args.name)
        print(json.dumps(status.status_json([(args.name, st)]), indent=2) if args.json
              else status.format_status(st))
        return EXIT_OK
    found = status.snapshot_all()
    print(json.dumps(status.status_json(found), indent=2) if args.json
          else status.format_list(found))
    return EXIT_OK


def _cmd_set(args):
    from .control import set_rate
    from .status import rate_text
    _parse_params("set", args)
    if "rate" not in getattr(args, "explicit", ()):
        raise _Usage("nothing to set: give rate=R")
    set_rate(args.name, args.pid, args.rate)
    print(f"rate of pid {args.pid} on FIFO {args.name!r} set to "
          f"{rate_text(args.rate)}")
    return EXIT_OK


def _cmd_clean(args):
    from .control import clean
    removed = clean(args.name, force=args.force)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print(f"nothing to remove for FIFO {args.name!r}")
    return EXIT_OK


def _cmd_doctor(args):
    import dataclasses
    from . import doctor
    checks = doctor.run_checks(args.size, args.item_size, args.max_clients)
    if args.json:
        print(json.dumps([dataclasses.asdict(check) for check in checks], indent=2))
    else:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="replace")   # a locale without × or —: ?, no traceback
        for check in checks:
            print(doctor.format_check(check))
    return EXIT_OK if all(check.ok for check in checks) else EXIT_ERROR


def _cmd_bridge(args):
    from . import bridge
    log = logs.setup("bridge", args.verbosity)
    options = {key: value for key, value in (
        ("group", args.group), ("maxlen", args.maxlen), ("batch", args.batch),
        ("claim_idle", args.claim_idle), ("host_name", args.host_name),
        ("pack", args.pack)) if value is not None}
    if not bridge.is_url(args.src) and not bridge.is_url(args.dst):
        raise _Usage("one of SRC and DST must be a redis:// URL, the other a FIFO name")
    if bridge.is_url(args.src) and bridge.is_url(args.dst):
        raise _Usage("one of SRC and DST must be a FIFO name: a bridge joins a FIFO and a "
                     "stream")
    names.validate(args.dst if bridge.is_url(args.src) else args.src)
    for option in ("maxlen", "pack"):
        if option in options and bridge.is_url(args.src):
            raise _Usage(f"--{option} goes with a bridge to a stream (FIFO -> stream)")
    if "claim_idle" in options and bridge.is_url(args.dst):
        raise _Usage("--claim-idle goes with a bridge from a stream (stream -> FIFO)")
    if args.group is not None and not args.group.strip():
        raise _Usage("--group must not be empty")
    if "host_name" in options and (bridge.is_url(args.src) or not args.host_name.strip()):
        raise _Usage("--host-name goes with a bridge to a stream (FIFO -> stream), and must "
                     "not be empty")
    return bridge.run_bridge(args.src, args.dst, shared=args.shared, log=log, **options)


def _cmd_demo(args):
    from .demo import run_demo
    return run_demo(args.seconds)


COMMANDS = {"fifo": _cmd_fifo, "producer": _cmd_producer, "consumer": _cmd_consumer,
            "status": _cmd_status, "set": _cmd_set, "clean": _cmd_clean, "demo": _cmd_demo,
            "doctor": _cmd_doctor, "bridge": _cmd_bridge}


def main(argv=None):
    """Run the command line ``argv``; return the exit code."""
    parser = build_parser()
    command = None
    try:
        args = parser.parse_args(argv)
        command = args.command
        return COMMANDS[command](args)
    except _Usage as error:
        if command is None:       # argparse stopped before it named the command
            words = sys.argv[1:] if argv is None else list(argv)
            command = next((w for w in words if w in COMMANDS), None)
        prefix = f"shmfifo {command}" if command else "shmfifo"
        print(f"{prefix}: error: {error} (see {prefix} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ItemTooLarge, RecordTooLong) as error:
        print(f"shmfifo {command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except FifoNotFound as error:
        print(f"shmfifo {command}: error: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        # The reader went away (for example `| head`): not an error of ours. Before OSError,
        # of which it is a subclass.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (FifoExists, CorruptSegment, ShmfifoError, OSError) as error:
        print(f"shmfifo {command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


def run():
    """Console-script entry point."""
    sys.exit(main())
