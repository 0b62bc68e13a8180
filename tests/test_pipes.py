"""shmfifo in Unix pipelines: ``producer --stdin`` and ``consumer --raw``, run through a real
shell, on the C and the pure-Python path; binary-safe JSON; and a consumer whose reader goes
away giving back what it took."""

import base64
import json
import os
import signal
import subprocess
import time

import pytest

import shmfifo
from procs import REPO, WAIT, assert_consistent, settle, shmfifo_command, stop, summary, \
    wait_until


@pytest.fixture(params=["C", "pure"])
def path_env(request):
    if request.param == "C" and shmfifo.accelerator() != "C":
        pytest.skip("the C accelerator is not built")
    return {"SHMFIFO_PURE": "1" if request.param == "pure" else "0"}


def shell(script, env=None, timeout=WAIT * 3, input=None):
    """Run ``script`` in bash, as a user types it; return the CompletedProcess (bytes)."""
    full = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run(["bash", "-c", "set -o pipefail; " + script], env=full,
                          capture_output=True, timeout=timeout, input=input)


def test_seq_through_the_fifo_reproduces_its_input(procs, fifo_name, path_env):
    daemon = procs.daemon(fifo_name, env=path_env)
    producer = shmfifo_command("producer", "--fifo", fifo_name, "--stdin")
    consumer = shmfifo_command("consumer", "--fifo", fifo_name, "--raw", "count=2000")
    done = shell(f"seq 1 2000 | {producer} & {consumer} > out.$$; wait $! && "
                 f"seq 1 2000 | cmp - out.$$; rc=$?; rm -f out.$$; exit $rc", env=path_env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    assert_consistent(fifo_name, expected_items=0)
    stop(daemon)


def test_nul_separated_binary_records_round_trip(procs, fifo_name, path_env):
    """Any bytes but the separator, empty records included; a last record without a
    separator is a record too (it comes out with one)."""
    daemon = procs.daemon(fifo_name, "--item-size", "512", env=path_env)
    binary = [bytes(range(1, 256)), b"\xff\xfe"]
    records = [b"a", b"", b"line\nbreak", *binary, b"\xc3\xa9t\xc3\xa9", b"last"]
    data = b"\0".join(records)          # no NUL after the last one
    put = shell(shmfifo_command("producer", "--fifo", fifo_name, "--stdin", "-0"),
                env=path_env, input=data)
    assert put.returncode == 0, put.stderr.decode()
    with shmfifo.attach(fifo_name) as q:
        items = q.get_many(len(records), timeout=WAIT)
        # UTF-8 records are str, the rest bytes
        assert items == [r if r in binary else r.decode() for r in records]
        q.put_many(items)
    out = shell(shmfifo_command("consumer", "--fifo", fifo_name, "--raw", "-0",
                                f"count={len(records)}"), env=path_env)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == data + b"\0"
    stop(daemon)


def test_a_line_too_long_exits_2_after_putting_the_lines_before_it(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--item-size", "16")
    lines = b"one\ntwo\n" + b"x" * 17 + b"\nfour\n"
    put = shell(shmfifo_command("producer", "--fifo", fifo_name, "--stdin"), input=lines)
    assert put.returncode == 2
    error = put.stderr.decode().splitlines()[-1]
    assert error == ("shmfifo producer: error: line 3 of the input has 17 bytes, and items of "
                     "this FIFO hold at most 16; the 2 lines before it were put, nothing after "
                     "(use a FIFO with a larger --item-size)")
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(10, timeout=WAIT) == ["one", "two"]
    stop(daemon)


def test_a_huge_line_is_refused_before_it_is_read_to_its_end(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--item-size", "16")
    # 64 MiB without a newline: refused after the first read, not after reading it all.
    put = shell(f"head -c 67108864 /dev/zero | tr '\\0' x | "
                f"{shmfifo_command('producer', '--fifo', fifo_name, '--stdin')}")
    assert put.returncode in (2, 141), put.stderr.decode()     # 141: tr got SIGPIPE
    assert b"line 1 of the input has more than" in put.stderr
    stop(daemon)


def test_a_rate_paces_stdin(procs, fifo_name):
    """At rate=20 ten lines take at least 9/20 s (the first is due at once)."""
    daemon = procs.daemon(fifo_name)
    started = time.monotonic()
    producer = shmfifo_command("producer", "--fifo", fifo_name, "--stdin", "rate=20")
    put = shell(f"seq 1 10 | {producer}")
    assert put.returncode == 0, put.stderr.decode()
    assert time.monotonic() - started >= 9 / 20
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(10, timeout=WAIT) == [str(i) for i in range(1, 11)]
    stop(daemon)


def test_stdin_producer_stops_on_sigterm_while_waiting_for_input(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    read_end, write_end = os.pipe()
    producer = procs.spawn("producer", "--fifo", fifo_name, "--stdin", stdin=read_end)
    os.close(read_end)
    try:
        os.write(write_end, b"first\n")
        with shmfifo.attach(fifo_name) as q:
            assert q.get(timeout=WAIT) == "first"
        producer.signal(signal.SIGTERM)       # input still open, nothing more on it
        assert producer.wait() == 0
        assert summary(producer)["reason"] == "SIGTERM"
    finally:
        os.close(write_end)
    stop(daemon)


def test_consumer_whose_reader_goes_away_gives_back_what_it_did_not_write(procs, fifo_name,
                                                                          path_env):
    """``consumer --raw | head -n 5``: the consumer writes until the pipe breaks (more items
    than a pipe's buffer holds, so it must); the batch it took and could not write goes back
    to the FIFO. What it wrote (and head left in the pipe's buffer) is the pipe's to lose:
    the consumer's count says how many."""
    total = 2000           # 200 KB of lines: more than the 64 KiB a pipe buffers
    daemon = procs.daemon(fifo_name, "--size", str(total), env=path_env)
    lines = [f"{i:05d}" + "x" * 95 for i in range(total)]
    with shmfifo.attach(fifo_name) as q:
        q.put_many(lines)
    consumer = shmfifo_command("consumer", "--fifo", fifo_name, "--raw")
    done = shell(f"{consumer} | head -n 5", env=path_env)
    assert done.stdout.decode().split() == lines[:5]
    log = done.stderr.decode().splitlines()
    assert not any("Traceback" in line for line in log), log
    written = int(next(line for line in log if "stopped (the reader of the output went away)"
                       in line).split(" after ")[1].split()[0])
    assert written < total
    st = wait_until(lambda: (lambda s: s["items"] == total - written and s)(settle(fifo_name)),
                    what="the items not written back in the FIFO")
    assert_consistent(st)
    with shmfifo.attach(fifo_name) as q:
        assert q.get(timeout=WAIT) == lines[written]      # the first one not written
    stop(daemon)


@pytest.mark.parametrize("pure", [False, True])
def test_close_without_ack_gives_items_back_to_the_front(procs, fifo_name, pure):
    daemon = procs.daemon(fifo_name)
    code = ("import shmfifo, sys\n"
            "q = shmfifo.attach(sys.argv[1])\n"
            "q.put_many(['a', 'b', 'c'])\n"
            "assert q.get_many(2) == ['a', 'b']\n"
            "q.close(ack=False)\n"
            "print('closed', flush=True)\n")
    giver = procs.python(code, fifo_name, env={"SHMFIFO_PURE": "1" if pure else "0"})
    assert giver.wait() == 0, giver.err
    st = wait_until(lambda: (lambda s: s["items"] == 3 and s)(settle(fifo_name)),
                    what="the two items back")
    assert st["requeued"] == 2
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(3, timeout=WAIT) == ["a", "b", "c"]
    stop(daemon)


def test_json_is_binary_safe(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    items = [b"\x00\xffab", "\x00text\u2028", 7, 2.5, b""]
    with shmfifo.attach(fifo_name) as q:
        q.put_many(items)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "--json", "rate=max",
                           f"count={len(items)}")
    assert consumer.wait() == 0, consumer.err
    got = [json.loads(line) for line in consumer.out]
    assert [(r["type"], r.get("encoding")) for r in got] == [
        ("bytes", "base64"), ("str", None), ("int", None), ("float", None),
        ("bytes", "base64")]
    assert base64.b64decode(got[0]["item"]) == b"\x00\xffab"
    assert got[1]["item"] == "\x00text\u2028"
    assert got[4]["item"] == ""
    stop(daemon)


@pytest.mark.parametrize("argv, message", [
    (["consumer", "--raw", "--json"], "--raw and --json do not go together"),
    (["consumer", "-0"], "-0/--null goes with --raw"),
    (["producer", "-0", "item=a"], "-0/--null goes with --stdin"),
    (["producer", "--stdin", "item=a"], "item= and --stdin do not go together"),
])
def test_pipe_usage_errors(procs, argv, message):
    proc = procs.spawn(*argv)
    assert proc.wait() == 2
    assert len(proc.err) == 1 and message in proc.err[0], proc.err
