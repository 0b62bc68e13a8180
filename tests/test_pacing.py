"""Scheduling logic of shmfifo.pacing, on a fake clock: no real seconds pass.

FakeTime.sleep advances the fake clock by what was asked, plus an optional oversleep, the way a
real timer is never early and often a little late. Real-process tests check the loops themselves.
"""

import math
import random

import pytest

from shmfifo.errors import UsageError
from shmfifo.pacing import MIN_SLEEP, STOP_POLL_INTERVAL, Pacer, parse_rate

# A monotonic clock does not start at zero; a pacer that assumed it did would be found out here.
T0 = 1000.0


class FakeTime:
    def __init__(self, oversleep=0.0, jitter=0.0, seed=1):
        self.now = T0
        self.oversleep = oversleep  # added to every sleep
        self.jitter = jitter  # plus uniform [0, jitter)
        self.rng = random.Random(seed)
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0, f"pacer asked for a sleep of {seconds!r}"
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep + self.rng.uniform(0, self.jitter)

    def elapsed(self):
        return self.now - T0

    def pacer(self, rate, **kwargs):
        return Pacer(rate, clock=self.clock, sleep=self.sleep, **kwargs)


def run(pacer, ft, seconds):
    """Loop wait()/done() for `seconds` of fake time; return [(t, first_item, n)] per batch."""
    batches = []
    done = 0
    while True:
        n = pacer.wait()
        if ft.elapsed() >= seconds - 1e-9:
            return batches
        batches.append((ft.elapsed(), done, n))
        done += n
        pacer.done(n)


def total(batches):
    return sum(n for _, _, n in batches)


def item_times(pacer, ft, count):
    times = []
    while len(times) < count:
        n = pacer.wait()
        times.extend([ft.elapsed()] * n)
        pacer.done(n)
    return times


def due_by(t, rate):
    """Items due by time t: deadlines 0, 1/rate, ... up to t (within the clock's 1 ns)."""
    return math.floor((t + 1e-9) * rate) + 1


def lateness(batches, rate):
    """Earliest and latest delivery of an item relative to its deadline first/rate."""
    early = min(t - (first + n - 1) / rate for t, first, n in batches)
    late = max(t - first / rate for t, first, n in batches)
    return early, late


# --- rate accuracy -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 10, 100, 1000, 10_000, 100_000])
def test_achieved_rate_over_5_s(rate):
    ft = FakeTime()
    batches = run(ft.pacer(rate), ft, 5.0)
    # Every item due by the last wake-up in the window, and no other, was reported. Up to 1 ms
    # of items (those due after the last wake-up before 5 s) fall outside: 9 at 10,000/s.
    assert total(batches) == due_by(batches[-1][0], rate)
    expected = {1: 5, 10: 50, 100: 500, 1000: 5000, 10_000: 49_991, 100_000: 499_901}[rate]
    assert total(batches) == expected
    assert abs(total(batches) - 5 * rate) <= 0.001 * 5 * rate
    early, late = lateness(batches, rate)
    assert early >= -2e-9  # never before its deadline
    assert late <= MIN_SLEEP + 1e-9  # never more than one batching interval after it


@pytest.mark.parametrize("rate", [1, 10, 100, 1000, 10_000, 100_000])
def test_oversleeping_timer_is_caught_up_without_drift(rate):
    # Every sleep 0.3..1.5 ms late: less than the 2 ms slack, so deadlines hold and the missed
    # items come in the next batch. A relative sleep(1 / rate) would lose up to 60 % at 1000/s.
    ft = FakeTime(oversleep=0.0003, jitter=0.0012)
    batches = run(ft.pacer(rate), ft, 5.0)
    assert total(batches) == due_by(batches[-1][0], rate)
    assert abs(total(batches) - 5 * rate) <= 0.001 * 5 * rate
    early, late = lateness(batches, rate)
    assert early >= -2e-9
    assert late <= MIN_SLEEP + 0.0015 + 1e-9


def test_no_drift_over_an_hour():
    ft = FakeTime(oversleep=0.0004)
    batches = run(ft.pacer(37.0), ft, 3600.0)
    assert total(batches) == 37 * 3600


# --- wake-ups ----------------------------------------------------------------------------------


def test_high_rate_sleeps_once_per_millisecond_not_per_item():
    ft = FakeTime()
    batches = run(ft.pacer(10_000), ft, 5.0)
    assert total(batches) == 49_991  # wake-ups at 0, 1, .., 4999 ms; see test_achieved_rate
    assert len(ft.sleeps) == 5000  # the last one ends at 5 s, outside the window
    assert all(s == pytest.approx(MIN_SLEEP) for s in ft.sleeps)
    # After the first item (due at once), every wake-up reports the 10 items of its millisecond.
    assert [n for _, _, n in batches[:4]] == [1, 10, 10, 10]


def test_batch_is_capped_and_the_rest_comes_without_sleeping():
    ft = FakeTime()
    pacer = ft.pacer(100_000, max_batch=64)
    assert pacer.wait() == 1
    pacer.done(1)
    assert pacer.wait() == 64  # slept 1 ms: items 1..100 are due
    pacer.done(64)
    assert pacer.wait() == 36
    pacer.done(36)
    assert len(ft.sleeps) == 1


@pytest.mark.parametrize("rate", [0.5, 2, 4, 999])
def test_low_rate_sleeps_exactly_to_each_deadline(rate):
    ft = FakeTime()
    pacer = ft.pacer(rate)
    for k in range(6):
        assert pacer.wait() == 1
        assert ft.now == pytest.approx(T0 + k / rate, abs=1e-12)
        pacer.done(1)
    assert ft.sleeps == pytest.approx([1 / rate] * 5, abs=1e-12)


def test_fractional_rate():
    ft = FakeTime()
    batches = run(ft.pacer(0.5), ft, 5.0)
    assert [(t, n) for t, _, n in batches] == [(0.0, 1), (2.0, 1), (4.0, 1)]
    assert ft.sleeps == [2.0, 2.0, 2.0]  # the third ends at 6.0, past the window


def test_schedule_starts_at_first_wait_not_at_construction():
    ft = FakeTime()
    pacer = ft.pacer(1000)
    ft.now += 5.0  # attaching took a while: that is not a backlog
    assert pacer.wait() == 1
    pacer.done(1)
    assert pacer.wait() == 1
    assert ft.elapsed() == pytest.approx(5.001)


# --- stalls ------------------------------------------------------------------------------------


def test_stall_longer_than_a_period_restarts_the_schedule():
    ft = FakeTime()
    pacer = ft.pacer(10)
    for _ in range(3):
        assert pacer.wait() == 1
        pacer.done(1)
    # The fourth put blocks on a full queue for 0.75 s: items 4..10 would all be overdue.
    assert pacer.wait() == 1
    ft.now += 0.75
    stalled_at = ft.now
    pacer.done(1, stalled_for=0.75)
    times = []
    for _ in range(4):
        assert pacer.wait() == 1
        times.append(ft.now - stalled_at)
        pacer.done(1)
    assert times == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-9)


@pytest.mark.parametrize("blocked, next_item", [(0.09, 0.2), (0.11, 0.31)])
def test_only_a_block_longer_than_a_period_is_a_stall(blocked, next_item):
    ft = FakeTime()
    pacer = ft.pacer(10)
    assert item_times(pacer, ft, 1) == [0.0]
    assert pacer.wait() == 1  # item 1, at 0.1
    ft.now += blocked
    pacer.done(1, stalled_for=blocked)
    # 90 ms < one period: the schedule keeps item 2 at 0.2. 110 ms: restart, one period on.
    assert item_times(pacer, ft, 1) == [pytest.approx(next_item)]


def test_short_block_at_high_rate_is_jitter_and_caught_up():
    ft = FakeTime()
    pacer = ft.pacer(10_000)
    assert pacer.wait() == 1
    ft.now += 0.0015  # 1.5 ms: 15 periods, but within the 2 ms slack
    pacer.done(1, stalled_for=0.0015)
    assert pacer.wait() == 15  # items 1..15, due by 1.5 ms, without sleeping
    assert ft.sleeps == []


def test_long_block_at_high_rate_restarts_without_burst():
    ft = FakeTime()
    pacer = ft.pacer(10_000)
    assert pacer.wait() == 1
    ft.now += 0.005  # 5 ms: beyond the slack
    pacer.done(1, stalled_for=0.005)
    assert pacer.wait() == 10  # one ordinary 1 ms batch, not the 50 missed items
    assert ft.sleeps == [pytest.approx(MIN_SLEEP)]


def test_unreported_pause_is_found_by_a_late_wake_up():
    ft = FakeTime()
    pacer = ft.pacer(10)
    assert pacer.wait() == 1
    pacer.done(1)
    ft.now += 0.55  # SIGSTOP, or a loaded machine: nothing told the pacer
    assert pacer.wait() == 1  # not the 6 items of the last 0.55 s
    assert ft.sleeps == []
    pacer.done(1)
    assert pacer.wait() == 1
    assert ft.elapsed() == pytest.approx(0.65)


def test_late_wake_up_from_preemption_is_caught_up():
    ft = FakeTime()
    pacer = ft.pacer(100)
    assert item_times(pacer, ft, 1) == [0.0]
    ft.oversleep = 0.045  # preempted on a busy machine: woken 45 ms late
    assert pacer.wait() == 5  # items 1..5, due 10..50 ms, made up at once
    pacer.done(5)
    ft.oversleep = 0.0
    assert item_times(pacer, ft, 2) == pytest.approx([0.06, 0.07])  # schedule kept


def test_wake_up_later_than_max_lateness_restarts():
    ft = FakeTime(oversleep=0.102)
    pacer = ft.pacer(1000)
    assert pacer.wait() == 1
    pacer.done(1)
    # Slept 1 ms, woke at 103 ms: item 1 (due at 1 ms) is 102 ms late, more than min_sleep +
    # max_lateness (101 ms). A pause: not the 103 items due.
    assert pacer.wait() == 1
    assert ft.elapsed() == pytest.approx(0.103)
    pacer.done(1)
    ft.oversleep = 0.0
    assert pacer.wait() == 1  # restarted at 103 ms: item 1 of the new schedule at 104 ms
    assert ft.elapsed() == pytest.approx(0.104)


# --- rate changes ------------------------------------------------------------------------------


def test_speeding_up_takes_effect_within_one_new_period():
    ft = FakeTime()
    pacer = ft.pacer(1)
    assert item_times(pacer, ft, 3) == pytest.approx([0.0, 1.0, 2.0])
    pacer.set_rate(100)  # at 2.0, just after item 2; under the old rate the next is due at 3.0
    assert pacer.rate == 100.0
    times = item_times(pacer, ft, 5)
    assert times == pytest.approx([2.01, 2.02, 2.03, 2.04, 2.05], abs=1e-9)


def test_slowing_down_keeps_the_next_deadline_then_spaces_by_the_new_period():
    ft = FakeTime()
    pacer = ft.pacer(100)
    item_times(pacer, ft, 3)
    pacer.set_rate(1)
    assert item_times(pacer, ft, 3) == pytest.approx([0.03, 1.03, 2.03], abs=1e-9)


def test_rate_change_does_not_make_up_overdue_items():
    ft = FakeTime()
    pacer = ft.pacer(1000)
    item_times(pacer, ft, 1)
    ft.now += 0.0025  # two items overdue, within the slack
    pacer.set_rate(2000)
    assert pacer.wait() == 1  # due now, but not the two overdue ones
    pacer.done(1)
    assert pacer.wait() == 2  # then 1 ms batches at the new rate
    assert ft.elapsed() == pytest.approx(0.0035)


def test_rate_change_keeps_the_count_and_the_long_run_rate():
    ft = FakeTime()
    pacer = ft.pacer(100)
    first = total(run(pacer, ft, 2.0))
    pacer.set_rate(400)
    start = ft.elapsed()
    second = total(run(pacer, ft, start + 2.0))
    assert first == 200
    assert second == 800
    assert pacer.count == 1000


def test_setting_the_same_rate_changes_nothing():
    ft = FakeTime()
    pacer = ft.pacer(1)
    item_times(pacer, ft, 2)
    ft.now += 0.4
    pacer.set_rate(1.0)
    assert item_times(pacer, ft, 1) == [2.0]


def test_new_rate_interrupts_a_long_sleep_via_stop():
    # The loop pattern from the module docstring: stop() also fires when the rate in shared
    # memory differs, so a loop at 0.01/s picks up a new rate within STOP_POLL_INTERVAL.
    ft = FakeTime()

    def shared_rate():  # the status tool writes 10 into the client's entry at t = 4.95 s
        return 10.0 if ft.elapsed() >= 4.95 else 0.01

    pacer = ft.pacer(shared_rate(), stop=lambda: shared_rate() != pacer.rate)
    times = []
    while len(times) < 4:
        if shared_rate() != pacer.rate:
            pacer.set_rate(shared_rate())
        n = pacer.wait()
        times.extend([ft.elapsed()] * n)
        pacer.done(n)
    assert max(ft.sleeps) == pytest.approx(STOP_POLL_INTERVAL)
    # Item 0 at 0; the change is seen at the 5.0 s poll; then one new period, and no gap.
    assert times == pytest.approx([0.0, 5.1, 5.2, 5.3], abs=1e-6)


# --- stop, unlimited ---------------------------------------------------------------------------


def test_stop_interrupts_a_long_sleep_and_keeps_the_schedule():
    ft = FakeTime()
    stop_at = [0.35]
    pacer = ft.pacer(0.5, stop=lambda: ft.elapsed() >= stop_at[0])
    assert pacer.wait() == 1
    pacer.done(1)
    assert pacer.wait() == 0  # stop() polled before each 0.1 s slice, true from 0.35 s
    assert ft.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert ft.elapsed() == pytest.approx(0.4)
    # Interrupted, not rescheduled: waiting again (stop now false) ends at the old deadline.
    stop_at[0] = math.inf
    assert pacer.wait() == 1
    assert ft.elapsed() == pytest.approx(2.0)


def test_unlimited_never_sleeps_and_returns_the_batch_bound():
    ft = FakeTime()
    for rate in (None, math.inf):
        pacer = ft.pacer(rate, max_batch=500)
        assert pacer.rate is None
        for _ in range(1000):
            assert pacer.wait() == 500
            pacer.done(500, stalled_for=10.0)
        assert pacer.count == 500_000
    assert ft.sleeps == []
    assert ft.elapsed() == 0.0


def test_from_unlimited_to_a_rate_and_back():
    ft = FakeTime()
    pacer = ft.pacer(10)
    item_times(pacer, ft, 2)
    pacer.set_rate(None)
    assert pacer.wait() == 64
    pacer.done(64)
    ft.now += 3.0
    pacer.set_rate(10)
    assert item_times(pacer, ft, 3) == pytest.approx([3.1, 3.2, 3.3])


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, rate",
    [("5", 5.0), ("0.5", 0.5), ("1e3", 1000.0), (" 12 ", 12.0), ("max", None), ("MAX", None)],
)
def test_parse_rate_accepts(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-1", "-0.5", "nan", "inf", "-inf", "abc", "", "5/s"])
def test_parse_rate_rejects(text):
    with pytest.raises(UsageError) as excinfo:
        parse_rate(text)
    assert isinstance(excinfo.value, ValueError)  # what argparse type functions catch
    assert (excinfo.value.argument, excinfo.value.given) == ("rate", text)
    assert str(excinfo.value) == (
        f"rate: {text!r} is not allowed; use a positive number of items per second, "
        "or 'max' for unlimited"
    )


def test_parse_rate_message_example():
    with pytest.raises(ValueError) as excinfo:
        parse_rate("abc")
    assert str(excinfo.value) == (
        "rate: 'abc' is not allowed; use a positive number of items per second, "
        "or 'max' for unlimited"
    )


@pytest.mark.parametrize("rate", [0, -1, math.nan, -math.inf, "5", True])
def test_bad_rate_is_refused(rate):
    with pytest.raises(UsageError) as excinfo:
        Pacer(rate)
    assert str(excinfo.value) == (
        f"rate: {rate!r} is not allowed; use a positive number of items per second, "
        "or None or math.inf for unlimited"
    )
    pacer = Pacer(1)
    with pytest.raises(UsageError):
        pacer.set_rate(rate)
    assert pacer.rate == 1.0


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"min_sleep": -1}, {"slack": math.nan}, {"max_lateness": -0.1}]
)
def test_bad_tuning_is_refused(kwargs):
    with pytest.raises(UsageError) as excinfo:
        Pacer(1, **kwargs)
    assert excinfo.value.argument == next(iter(kwargs))
