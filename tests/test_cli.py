"""The ``shmfifo`` command line: usage errors, exit codes, help.

Every case runs ``python -m shmfifo`` as a real process. A usage error must exit 2 with one
line on stderr that names the argument and says what is allowed, and no traceback.
"""

import json
import os
import signal

import pytest

from shmfifo import names

NAME_RULE = "use 1 to 100 characters from A-Z a-z 0-9 _ . - (not starting with . or -)"
RATE_RULE = "use a positive number of items per second, or 'max' for unlimited"
WHOLE_RULE = "use a whole number of 1 or more"


def run(procs, *args, timeout=10):
    proc = procs.spawn(*args)
    code = proc.wait(timeout)
    return code, proc.out, proc.err


def assert_one_line_error(err, command, *fragments):
    assert len(err) == 1, err
    line = err[0]
    assert "Traceback" not in line
    assert line.startswith(f"shmfifo {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


USAGE_ERRORS = [
    # (argv, the fragments the one line must contain)
    (["producer", "item=a", "foo=1"], ["unknown parameter 'foo'", "allowed: item, rate, count"]),
    (["consumer", "foo=1"], ["unknown parameter 'foo'", "allowed: rate, count"]),
    (["producer", "item=a", "rate"], ["parameter 'rate' is not KEY=VALUE", "item=, rate=, count="]),
    (["producer", "item=a", "rate=-1"], ["rate: '-1' is not allowed", RATE_RULE]),
    (["producer", "item=a", "rate=0"], ["rate: '0' is not allowed", RATE_RULE]),
    (["producer", "item=a", "rate=abc"], ["rate: 'abc' is not allowed", RATE_RULE]),
    (["producer", "item=a", "rate=nan"], ["rate: 'nan' is not allowed", RATE_RULE]),
    (["producer", "item=a", "rate=inf"], ["rate: 'inf' is not allowed", RATE_RULE]),
    (["producer", "item=a", "rate="], ["rate: '' is not allowed", RATE_RULE]),
    (["producer", "--item", "a", "--rate", "0"], ["--rate: '0' is not allowed", RATE_RULE]),
    (["consumer", "rate=0"], ["rate: '0' is not allowed", RATE_RULE]),
    (["consumer", "rate=-2.5"], ["rate: '-2.5' is not allowed", RATE_RULE]),
    (["consumer", "--rate", "nan"], ["--rate: 'nan' is not allowed", RATE_RULE]),
    (["producer", "item="], ["item: '' is not allowed", "must not be empty"]),
    (["producer", "--item", ""], ["item: '' is not allowed", "must not be empty"]),
    (["producer", "rate=5"], ["missing the item", "item=VALUE", "--item VALUE"]),
    (["producer"], ["missing the item", "item=VALUE"]),
    (["producer", "item=a", "count=0"], ["count: '0' is not allowed", WHOLE_RULE]),
    (["producer", "item=a", "count=-3"], ["count: '-3' is not allowed", WHOLE_RULE]),
    (["producer", "item=a", "count=1.5"], ["count: '1.5' is not allowed", WHOLE_RULE]),
    (["consumer", "count=0"], ["count: '0' is not allowed", WHOLE_RULE]),
    (["consumer", "--count", "0"], ["--count: '0' is not allowed", WHOLE_RULE]),
    (["producer", "--fifo", "a/b", "item=a"], ["--fifo: 'a/b' is not allowed", NAME_RULE]),
    (["producer", "--fifo", "", "item=a"], ["--fifo: '' is not allowed", NAME_RULE]),
    (["consumer", "--fifo", ".x"], ["--fifo: '.x' is not allowed", NAME_RULE]),
    (["consumer", "--fifo=-x"], ["--fifo: '-x' is not allowed", NAME_RULE]),
    (["consumer", "--fifo", "a" * 300], ["--fifo: 'aaaa", NAME_RULE]),
    (["fifo", "--name", "a/b"], ["--name: 'a/b' is not allowed", NAME_RULE]),
    (["fifo", "--name", ""], ["--name: '' is not allowed", NAME_RULE]),
    (["fifo", "--name", ".x"], ["--name: '.x' is not allowed", NAME_RULE]),
    (["fifo", "--name", "a" * 101], ["--name: 'aaaa", NAME_RULE]),
    (["status", "a/b"], ["name: 'a/b' is not allowed", NAME_RULE]),
    (["fifo", "--size", "0"], ["--size: '0' is not allowed", WHOLE_RULE]),
    (["fifo", "--size", "-1"], ["--size: '-1' is not allowed", WHOLE_RULE]),
    (["fifo", "--size", "abc"], ["--size: 'abc' is not allowed", WHOLE_RULE]),
    (["fifo", "--size", "1.5"], ["--size: '1.5' is not allowed", WHOLE_RULE]),
    (["fifo", "--size", "100000000000"], ["size: 100000000000 is not allowed", "1048576"]),
    (["fifo", "--item-size", "0"], ["--item-size: '0' is not allowed",
                                    "use a whole number of bytes of 1 or more, alone or with "
                                    "a suffix K, M or G"]),
    (["fifo", "--size", "4", "--batch", "5"], ["batch: 5 is not allowed", "size"]),
    (["fifo", "--drain-timeout", "-1"], ["--drain-timeout: '-1' is not allowed", "seconds"]),
    (["fifo", "--mode", "999"], ["--mode: '999' is not allowed", "octal"]),
    (["set", "x", "abc", "rate=1"], ["pid: 'abc' is not allowed", WHOLE_RULE]),
    (["set", "x", "1", "foo=1"], ["unknown parameter 'foo'", "allowed: rate"]),
]


@pytest.mark.parametrize("argv,fragments", USAGE_ERRORS,
                         ids=[" ".join(a)[:40] for a, _ in USAGE_ERRORS])
def test_usage_error_exits_2_with_one_line_naming_the_argument(procs, argv, fragments):
    code, out, err = run(procs, *argv)
    assert code == 2, err
    assert out == []
    line = assert_one_line_error(err, argv[0], *fragments)
    assert "argument " not in line            # named once, not "argument --size: --size:"


def test_a_usage_error_does_not_create_a_fifo(procs, fifo_name):
    code, _, err = run(procs, "fifo", "--name", fifo_name, "--size", "4", "--batch", "9")
    assert code == 2, err
    assert not os.path.exists(names.shm_path(fifo_name))


@pytest.mark.parametrize("argv", [[], ["bogus"]])
def test_no_or_unknown_command_is_a_usage_error(procs, argv):
    code, out, err = run(procs, *argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("shmfifo: error: ")
    assert "COMMAND" in err[0]


# -- help --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["fifo"], ["producer"], ["consumer"], ["status"],
                                     ["set"], ["clean"], ["demo"]], ids=lambda c: c[0] if c
                         else "shmfifo")
def test_help_exits_0_and_documents_the_exit_codes(procs, command):
    code, out, err = run(procs, *command, "--help")
    assert code == 0
    assert err == []
    text = "\n".join(out)
    assert text.startswith("usage: shmfifo")
    assert "exit codes:" in text
    for line in ("0  success", "1  runtime error", "2  usage error", "3  FIFO not found"):
        assert line in text, line


def test_producer_and_consumer_help_show_the_lab_parameters(procs):
    code, out, _ = run(procs, "producer", "--help")
    assert code == 0
    assert "item=VALUE, rate=R, count=N" in "\n".join(out)
    code, out, _ = run(procs, "consumer", "--help")
    assert code == 0
    assert "rate=R, count=N" in "\n".join(out)


def test_version(procs):
    code, out, _ = run(procs, "--version")
    assert code == 0
    assert out[0].startswith("shmfifo ")


# -- a FIFO that is not there -----------------------------------------------------------------

@pytest.mark.parametrize("argv", [["producer", "item=a", "--fifo", "{}"],
                                  ["consumer", "--fifo", "{}"],
                                  ["consumer", "--json", "--fifo", "{}", "count=1"],
                                  ["status", "{}"], ["status", "{}", "--json"],
                                  ["set", "{}", "1", "rate=2"]],
                         ids=["producer", "consumer", "consumer-json", "status", "status-json",
                              "set"])
def test_a_missing_fifo_exits_3_naming_it_and_how_to_start_it(procs, fifo_name, argv):
    argv = [a.format(fifo_name) for a in argv]
    code, out, err = run(procs, *argv)
    assert code == 3, err
    assert out == []
    assert_one_line_error(err, argv[0], f"no FIFO named {fifo_name!r}",
                          f"start one with: shmfifo fifo --name {fifo_name}")


def test_a_fifo_whose_daemon_died_exits_3_saying_it_is_not_running(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    daemon.signal(signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL
    try:
        for argv in (["producer", "--fifo", fifo_name, "item=a"],
                     ["consumer", "--fifo", fifo_name]):
            code, out, err = run(procs, *argv)
            assert code == 3, err
            assert_one_line_error(err, argv[0], f"daemon of FIFO {fifo_name!r} is not running",
                                  f"shmfifo fifo --name {fifo_name}")
        code, out, _ = run(procs, "status", fifo_name, "--json")
        assert code == 0
        assert json.loads("\n".join(out))["fifos"][0]["daemon"] == "gone"
    finally:
        code, out, err = run(procs, "clean", fifo_name)
    assert code == 0, err
    assert f"removed {names.shm_path(fifo_name)}" in out


# -- item too large ----------------------------------------------------------------------------

@pytest.mark.parametrize("item,size", [("x" * 17, 17), ("é" * 10, 20), ("y" * 200, 200)])
def test_an_item_that_does_not_fit_exits_2_naming_both_sizes(procs, fifo_name, item, size):
    daemon = procs.daemon(fifo_name, "--size", "4", "--item-size", "16")
    try:
        code, out, err = run(procs, "producer", "--fifo", fifo_name, f"item={item}", "rate=max")
        assert code == 2, err
        assert out == []
        assert_one_line_error(err, "producer", f"item of {size} bytes",
                              "at most 16 bytes", f"--item-size {size}")
        code, out, _ = run(procs, "status", fifo_name, "--json")
        st = json.loads("\n".join(out))["fifos"][0]
        assert (st["items"], st["puts"], st["clients"]) == (0, 0, [])
        # An item of exactly the item size is fine.
        code, _, err = run(procs, "producer", "--fifo", fifo_name, "item=" + "z" * 16,
                           "count=1")
        assert code == 0, err
    finally:
        daemon.signal()
    assert daemon.wait() == 0


# -- runtime errors ----------------------------------------------------------------------------

def test_a_second_daemon_with_the_same_name_exits_1_and_leaves_the_first_alone(procs,
                                                                             fifo_name):
    first = procs.daemon(fifo_name, "--size", "4")
    try:
        for extra in ([], ["--size", "8"]):
            code, out, err = run(procs, "fifo", "--name", fifo_name, *extra)
            assert code == 1, err
            assert_one_line_error(err, "fifo", f"daemon for FIFO {fifo_name!r} is already "
                                               f"running (pid {first.pid})")
        assert first.alive()
        code, out, _ = run(procs, "producer", "--fifo", fifo_name, "item=still", "count=1")
        assert code == 0
        code, out, _ = run(procs, "status", fifo_name, "--json")
        st = json.loads("\n".join(out))["fifos"][0]
        assert (st["daemon_pid"], st["daemon"], st["capacity"], st["items"]) == \
            (first.pid, "running", 4, 1)
    finally:
        first.signal()
    assert first.wait() == 0


def test_status_of_a_running_fifo(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "5", "--item-size", "64", "--split-locks")
    try:
        code, out, _ = run(procs, "status", fifo_name)
        assert code == 0
        text = "\n".join(out)
        assert f"FIFO {fifo_name!r}  daemon pid {daemon.pid} (running)" in text
        assert "items       0/5 (slots of 64 bytes" in text
        assert "empty=5 fill=0 mutex=1 take=1" in text
        assert "no clients attached" in text
        code, out, _ = run(procs, "status")
        assert code == 0
        assert any(line.startswith(fifo_name + " ") and "0/5" in line for line in out)
    finally:
        daemon.signal()
    assert daemon.wait() == 0
