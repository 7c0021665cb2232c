"""One contract, two limit backends: `MemoryLimits` and the Lua scripts on real Redis.

Windows here are a few hundred milliseconds so the time-based rules (sliding windows,
lease expiry, budget periods, pacing) are exercised for real, not with a fake clock:
the Redis scripts read the server's clock, so a fake one would not reach them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.limits.backend import LimitBackend
from gateway.limits.memory import MemoryLimits
from gateway.limits.rules import PaceVerdict, Rule, Unit
from gateway.store import RedisStore

SLACK_MS = 40
"""Scheduling and round-trip slack for time-based assertions."""
BLOCK = "{provider:p}:pace:block"


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest, redis_store: RedisStore) -> LimitBackend:
    if request.param == "memory":
        return MemoryLimits()
    return redis_store.limits


def window(
    limit: int, window_ms: int, amount: int = 1, name: str = "rpm", tag: str = "{t}:rl:t"
) -> Rule:
    unit: Unit = "tokens" if name == "tpm" else "requests"
    return Rule(f"{tag}:{name}", "window", limit, window_ms, amount, unit, name)


def lease(limit: int, ttl_ms: int) -> Rule:
    return Rule("{t}:rl:t:conc", "lease", limit, ttl_ms, 1, "concurrency", "concurrent requests")


def budget(limit: int, window_ms: int) -> Rule:
    return Rule("{t}:rl:t:usd:d:20240101", "budget", limit, window_ms, 0, "usd", "daily budget")


def paced(limit: int, window_ms: int, amount: int = 1, name: str = "rpm") -> Rule:
    return window(limit, window_ms, amount, name, tag="{provider:p}:pace")


class Clock:
    """Milliseconds since it was made (right before the calls it times): bounds waits."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)


def assert_near(value: int, expected: int, clock: Clock) -> None:
    """`value` is a time left that was `expected` at the clock's start: it shrank by at
    most the elapsed time (plus slack) and never exceeds `expected`."""
    assert expected - clock.ms() - SLACK_MS <= value <= expected, (value, expected, clock.ms())


def assert_paced(verdict: PaceVerdict, refused: str | None, wait_ms: int, clock: Clock) -> None:
    """A pacing verdict: booked (`refused` None) or refused as `refused`, with a wait
    that was `wait_ms` at the clock's start (see `assert_near`)."""
    assert verdict.refused == refused
    assert_near(verdict.wait_ms, wait_ms, clock)


async def sleep_ms(ms: int) -> None:
    await asyncio.sleep(ms / 1000)


# -- sliding windows -----------------------------------------------------------------


async def test_window_admits_exactly_limit_then_waits_for_the_oldest(limits):
    rule = window(5, 300)
    clock = Clock()
    for i in range(5):
        verdict = await limits.admit(f"r{i}", [rule])
        assert verdict.refused is None
        assert verdict.used == (i + 1,)
    refused = await limits.admit("r5", [rule])
    assert refused.refused == rule
    assert refused.used == (5,)
    assert refused.reset_ms == ()
    assert_near(refused.retry_ms, 300, clock)
    await sleep_ms(refused.retry_ms - 100)
    still = await limits.admit("r6", [rule])
    assert still.refused == rule and 0 < still.retry_ms <= 100
    await sleep_ms(still.retry_ms + 30)
    again = await limits.admit("r7", [rule])
    assert again.refused is None
    assert again.used == (1,)


async def test_no_burst_at_a_window_boundary(limits):
    rule = window(4, 300)
    clock = Clock()
    for i in range(4):
        assert (await limits.admit(f"a{i}", [rule])).refused is None
    await sleep_ms(150)  # half a window: a fixed window could have reset here
    refused = await limits.admit("b0", [rule])
    assert refused.refused == rule
    assert_near(refused.retry_ms, 300, clock)
    assert refused.retry_ms <= 150
    await sleep_ms(refused.retry_ms + 20)
    for i in range(4):
        assert (await limits.admit(f"c{i}", [rule])).refused is None
    assert (await limits.admit("c4", [rule])).refused == rule


async def test_window_slides_entry_by_entry(limits):
    rule = window(4, 300)
    first = Clock()
    for i in range(2):
        assert (await limits.admit(f"a{i}", [rule])).refused is None
    await sleep_ms(150)
    second = Clock()
    for i in range(2):
        assert (await limits.admit(f"b{i}", [rule])).refused is None
    refused = await limits.admit("x", [rule])
    assert_near(refused.retry_ms, 300, first)  # the first two leave first
    await sleep_ms(refused.retry_ms + 20)
    for i in range(2):
        verdict = await limits.admit(f"c{i}", [rule])
        assert verdict.refused is None
        assert verdict.used == (3 + i,)  # the two of the second batch are still in
    refused = await limits.admit("y", [rule])
    assert refused.refused == rule
    assert refused.used == (4,)
    assert_near(refused.retry_ms, 300, second)
    assert refused.retry_ms <= 150


async def test_token_window_weighs_amounts(limits):
    def tokens(amount: int) -> Rule:
        return window(1000, 300, amount, "tpm")

    clock = Clock()
    assert (await limits.admit("a", [tokens(600)])).used == (600,)
    refused = await limits.admit("b", [tokens(500)])
    assert refused.refused == tokens(500)
    assert refused.used == (600,)
    assert_near(refused.retry_ms, 300, clock)
    assert (await limits.admit("c", [tokens(400)])).used == (1000,)
    assert (await limits.admit("d", [tokens(1)])).refused == tokens(1)
    never = await limits.admit("e", [tokens(1001)])
    assert never.refused == tokens(1001)
    assert never.retry_ms == -1


async def test_too_large_is_never_even_when_empty(limits):
    rule = window(1000, 300, 1001, "tpm")
    verdict = await limits.admit("a", [rule])
    assert verdict.refused == rule
    assert verdict.retry_ms == -1
    assert verdict.used == (0,)


async def test_token_retry_waits_for_enough_units_to_leave(limits):
    def tokens(amount: int) -> Rule:
        return window(1000, 300, amount, "tpm")

    first = Clock()
    assert (await limits.admit("a", [tokens(300)])).refused is None
    await sleep_ms(100)
    second = Clock()
    assert (await limits.admit("b", [tokens(700)])).refused is None
    small = await limits.admit("c", [tokens(300)])  # freed when the 300 leaves
    assert_near(small.retry_ms, 300, first)
    assert small.retry_ms <= 200
    large = await limits.admit("d", [tokens(301)])  # needs the 700 gone as well
    assert_near(large.retry_ms, 300, second)
    assert large.retry_ms > 200


# -- settlement ------------------------------------------------------------------------


async def test_settle_reconciles_a_token_reservation(limits):
    def tokens(amount: int) -> Rule:
        return window(1000, 400, amount, "tpm")

    assert (await limits.admit("t1", [tokens(1000)])).used == (1000,)
    assert (await limits.admit("t2", [tokens(1)])).refused is not None
    await limits.settle("t1", [(tokens(1000), 100)])
    assert (await limits.admit("t3", [tokens(901)])).refused == tokens(901)
    assert (await limits.admit("t4", [tokens(900)])).used == (1000,)


async def test_settle_to_zero_undoes_a_request(limits):
    # What the limiter sends for an admission that arrived after its caller gave up.
    rule = window(2, 400)
    assert (await limits.admit("r1", [rule])).used == (1,)
    assert (await limits.admit("r2", [rule])).used == (2,)
    assert (await limits.admit("r3", [rule])).refused == rule
    await limits.settle("r1", [(rule, 0)])
    await limits.settle("r2", [(rule, 1)])  # the same amount: the request stays
    assert (await limits.admit("r4", [rule])).used == (2,)
    assert (await limits.admit("r5", [rule])).refused == rule


async def test_settle_can_charge_more_than_reserved(limits):
    def tokens(amount: int) -> Rule:
        return window(1000, 400, amount, "tpm")

    assert (await limits.admit("t1", [tokens(100)])).used == (100,)
    await limits.settle("t1", [(tokens(100), 700)])
    refused = await limits.admit("t2", [tokens(301)])
    assert refused.refused == tokens(301)
    assert refused.used == (700,)
    assert (await limits.admit("t3", [tokens(300)])).used == (1000,)


async def test_settle_of_unknown_ticket_or_same_amount_changes_nothing(limits):
    rule = window(1000, 400, 600, "tpm")
    assert (await limits.admit("t1", [rule])).refused is None
    await limits.settle("ghost", [(rule, 10)])
    await limits.settle("t1", [(rule, 600)])
    assert (await limits.admit("t2", [window(1000, 400, 400, "tpm")])).used == (1000,)


async def test_settle_after_the_window_expired_is_a_no_op(limits):
    full = window(1000, 300, 1000, "tpm")
    assert (await limits.admit("old", [full])).refused is None
    await sleep_ms(330)
    await limits.settle("old", [(full, 5000)])
    assert (await limits.admit("new", [full])).used == (1000,)


async def test_settle_of_an_entry_that_left_a_live_window_is_a_no_op(limits):
    def tokens(amount: int) -> Rule:
        return window(1000, 300, amount, "tpm")

    assert (await limits.admit("old", [tokens(600)])).refused is None
    await sleep_ms(150)
    assert (await limits.admit("mid", [tokens(300)])).refused is None  # keeps the window alive
    await sleep_ms(170)
    await limits.settle("old", [(tokens(600), 5000)])
    assert (await limits.admit("new", [tokens(700)])).used == (1000,)
    assert (await limits.admit("more", [tokens(1)])).used == (1000,)  # refused


# -- leases ----------------------------------------------------------------------------


async def test_leases_limit_concurrency_and_settle_releases(limits):
    rule = lease(2, 5_000)
    assert (await limits.admit("a", [rule])).used == (1,)
    assert (await limits.admit("b", [rule])).used == (2,)
    refused = await limits.admit("c", [rule])
    assert refused.refused == rule
    assert refused.used == (2,)
    assert refused.retry_ms == 1000  # capped: a lease is usually released long before expiry
    await limits.settle("a", [(rule, 0)])
    assert (await limits.admit("c", [rule])).used == (2,)
    assert (await limits.admit("d", [rule])).refused == rule


async def test_leases_expire_without_renewal(limits):
    rule = lease(2, 300)
    clock = Clock()
    assert (await limits.admit("a", [rule])).refused is None
    assert (await limits.admit("b", [rule])).refused is None
    refused = await limits.admit("c", [rule])
    assert_near(refused.retry_ms, 300, clock)
    await sleep_ms(refused.retry_ms + 20)
    assert (await limits.admit("c", [rule])).used == (1,)


async def expired_a_live_b(limits: LimitBackend) -> Rule:
    """Two leases of 200 ms: "a", then "b" 120 ms later (it keeps the lease set alive);
    returns 120 ms after that, "a" expired and "b" not."""
    rule = lease(2, 200)
    assert (await limits.admit("a", [rule])).refused is None
    await sleep_ms(120)
    assert (await limits.admit("b", [rule])).refused is None
    await sleep_ms(120)
    return rule


async def test_an_expired_lease_frees_its_slot_while_others_live(limits):
    rule = await expired_a_live_b(limits)
    verdict = await limits.admit("c", [rule])
    assert verdict.refused is None
    assert verdict.used == (2,)
    assert (await limits.admit("d", [rule])).refused == rule


async def test_renew_keeps_live_leases_only(limits):
    rule = lease(2, 300)
    assert (await limits.admit("a", [rule])).refused is None
    assert (await limits.admit("b", [rule])).refused is None
    await sleep_ms(200)
    await limits.renew(rule.key, ["a", "b", "ghost"], 300)
    await sleep_ms(200)  # past the first expiry, within the renewed one
    refused = await limits.admit("c", [rule])
    assert refused.refused == rule
    assert refused.used == (2,)  # "ghost" was not added
    await limits.settle("a", [(rule, 0)])
    await limits.renew(rule.key, ["a"], 300)  # released: renewing does not bring it back
    assert (await limits.admit("c", [rule])).used == (2,)


async def test_renew_does_not_revive_an_expired_lease(limits):
    rule = await expired_a_live_b(limits)
    await limits.renew(rule.key, ["a", "b"], 300)
    verdict = await limits.admit("c", [rule])
    assert verdict.refused is None
    assert verdict.used == (2,)


# -- budgets ---------------------------------------------------------------------------


async def test_budget_admits_below_limit_and_settle_charges(limits):
    rule = budget(1_000_000, 5_000)
    first = await limits.admit("a", [rule])
    assert first.refused is None
    assert first.used == (0,)
    assert first.reset_ms == (5_000,)
    await limits.settle("a", [(rule, 600_000)])
    assert (await limits.admit("b", [rule])).used == (600_000,)  # below the limit: admitted
    await limits.settle("b", [(rule, 0)])  # nothing spent: nothing charged
    await limits.settle("b", [(rule, 400_000)])
    refused = await limits.admit("c", [rule])
    assert refused.refused == rule
    assert refused.retry_ms == 5_000
    assert refused.used == (1_000_000,)


async def test_budget_counter_expires_with_its_period(limits):
    rule = budget(1000, 300)
    await limits.settle("a", [(rule, 1500)])
    assert (await limits.admit("b", [rule])).refused == rule
    await sleep_ms(330)
    verdict = await limits.admit("c", [rule])
    assert verdict.refused is None
    assert verdict.used == (0,)


# -- several rules ---------------------------------------------------------------------


async def test_admission_is_all_or_nothing(limits):
    loose = window(5, 5_000)
    tight = window(1, 5_000, name="rps")
    held = lease(3, 5_000)
    assert (await limits.admit("a", [loose, held, tight])).used == (1, 1, 1)
    refused = await limits.admit("b", [loose, held, tight])
    assert refused.refused == tight
    assert refused.used == (1,)
    # Neither the window nor the lease before the refused rule was reserved.
    assert (await limits.admit("c", [loose, held])).used == (2, 2)


async def test_budget_refusal_reserves_nothing_after_it(limits):
    spent = budget(100, 5_000)
    rule = window(5, 5_000)
    await limits.settle("x", [(spent, 100)])
    assert (await limits.admit("a", [spent, rule])).refused == spent
    assert (await limits.admit("b", [rule])).used == (1,)


async def test_verdict_used_and_reset_per_rule(limits):
    tokens = window(1000, 300, 300, "tpm")
    held = lease(3, 300)
    spent = budget(5_000_000, 10_000)
    requests = window(5, 200)
    rules = [spent, tokens, held, requests]
    first = await limits.admit("a", rules)
    assert first.used == (0, 300, 1, 1)
    assert first.reset_ms == (10_000, 300, 0, 200)
    clock = Clock()
    await sleep_ms(50)
    await limits.settle("a", [(spent, 1234)])
    second = await limits.admit("b", rules)
    assert second.used == (1234, 600, 2, 2)
    assert second.reset_ms[0] == 10_000
    assert second.reset_ms[2] == 0
    assert 300 - clock.ms() - SLACK_MS <= second.reset_ms[1] <= 250  # the oldest entry's
    assert 200 - clock.ms() - SLACK_MS <= second.reset_ms[3] <= 150


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_admissions_admit_exactly_the_limit(limits):
    rule = window(10, 5_000)
    verdicts = await asyncio.gather(*(limits.admit(f"c{i}", [rule]) for i in range(60)))
    admitted = [v for v in verdicts if v.refused is None]
    assert len(admitted) == 10
    assert sorted(v.used[0] for v in admitted) == list(range(1, 11))
    assert all(v.used == (10,) for v in verdicts if v.refused is not None)


async def test_concurrent_admissions_over_two_rules_stay_all_or_nothing(limits):
    loose = window(1000, 5_000, 100, "tpm")
    tight = window(7, 5_000)
    held = lease(8, 5_000)
    verdicts = await asyncio.gather(
        *(limits.admit(f"c{i}", [loose, held, tight]) for i in range(40))
    )
    assert sum(v.refused is None for v in verdicts) == 7
    assert (await limits.admit("after", [loose, held])).used == (800, 8)


async def test_concurrent_pacing_books_exactly_the_room(limits):
    rule = paced(5, 5_000)
    verdicts = await asyncio.gather(*(limits.pace(f"p{i}:t", [rule], BLOCK, 0) for i in range(30)))
    assert sum(v.refused is None and v.wait_ms == 0 for v in verdicts) == 5
    assert sum(v.refused == "wait" for v in verdicts) == 25


# -- upstream pacing -------------------------------------------------------------------


async def test_pace_books_send_times_in_order(limits):
    rule = paced(2, 300)
    clock = Clock()
    waits = [(await limits.pace(f"p{i}:t", [rule], BLOCK, 5_000)) for i in range(6)]
    assert all(v.refused is None for v in waits)
    assert [v.wait_ms for v in waits[:2]] == [0, 0]
    for verdict, slot in zip(waits[2:], (300, 300, 600, 600), strict=True):
        assert_near(verdict.wait_ms, slot, clock)


async def test_pace_refuses_a_wait_beyond_max_without_booking(limits):
    rule = paced(1, 400)
    clock = Clock()
    assert (await limits.pace("a:t", [rule], BLOCK, 100)).wait_ms == 0
    assert_paced(await limits.pace("b:t", [rule], BLOCK, 100), "wait", 400, clock)
    booked = await limits.pace("c:t", [rule], BLOCK, 1_000)
    assert_paced(booked, None, 400, clock)  # not 800: "b" holds no slot


async def test_pace_refuses_never_when_too_large(limits):
    rule = paced(1000, 300, 1001, "tpm")
    verdict = await limits.pace("a:t", [rule], BLOCK, 60_000)
    assert verdict.refused == "never"
    fits = await limits.pace("b:t", [paced(1000, 300, 1000, "tpm")], BLOCK, 0)
    assert fits.refused is None and fits.wait_ms == 0


async def test_pace_checks_every_rule(limits):
    requests = paced(10, 300)
    tokens = paced(1000, 300, 600, "tpm")
    clock = Clock()
    assert (await limits.pace("a:t", [requests, tokens], BLOCK, 1_000)).wait_ms == 0
    second = await limits.pace("b:t", [requests, tokens], BLOCK, 1_000)
    assert_paced(second, None, 300, clock)  # the token window decides


async def test_pace_fair_share_of_the_queue(limits):
    rule = paced(2, 500)
    clock = Clock()
    # Capacity within the wait: 2 * 1000 / 500 = 4; alone a tenant may queue 4 // 2 = 2.
    for i in range(2):
        assert (await limits.pace(f"a{i}:acme", [rule], BLOCK, 1_000)).wait_ms == 0
    for i in (2, 3):
        assert_paced(await limits.pace(f"a{i}:acme", [rule], BLOCK, 1_000), None, 500, clock)
    assert_paced(await limits.pace("a4:acme", [rule], BLOCK, 1_000), "share", 1_000, clock)
    # Another tenant's first queued request is always booked ...
    assert_paced(await limits.pace("b0:bravo", [rule], BLOCK, 1_000), None, 1_000, clock)
    # ... and with one other tenant queued, the share is 4 // 3 = 1.
    assert (await limits.pace("b1:bravo", [rule], BLOCK, 1_000)).refused == "share"
    # Refused requests booked nothing: the queue holds 5 entries, the next slot is at 1000.
    assert_paced(await limits.pace("c0:carol", [rule], BLOCK, 10_000), None, 1_000, clock)


async def test_block_delays_bookings(limits):
    rule = paced(10, 300)
    clock = Clock()
    await limits.tighten([], BLOCK, 250)
    await limits.tighten([], BLOCK, 50)  # a shorter block never shortens the current one
    assert_paced(await limits.pace("a:t", [rule], BLOCK, 100), "wait", 250, clock)
    booked = await limits.pace("b:t", [rule], BLOCK, 1_000)
    assert_paced(booked, None, 250, clock)
    alone = await limits.pace("c:t", [], BLOCK, 1_000)  # no windows: the block still holds
    assert_near(alone.wait_ms, 250, clock)
    await sleep_ms(booked.wait_ms + 10)
    assert (await limits.pace("d:t", [rule], BLOCK, 0)).wait_ms == 0


async def test_tighten_to_a_lower_reported_remaining(limits):
    rule = paced(10, 300)
    clock = Clock()
    for i in range(2):
        assert (await limits.pace(f"a{i}:t", [rule], BLOCK, 0)).wait_ms == 0
    await limits.tighten([(rule, 8)], BLOCK, 0)  # agrees with us: nothing to do
    await limits.tighten([(rule, -1)], BLOCK, 0)  # unknown: nothing to do
    await limits.tighten([(rule, 3)], BLOCK, 0)  # 5 fewer than we think
    for i in range(3):
        verdict = await limits.pace(f"b{i}:t", [rule], BLOCK, 0)
        assert verdict.refused is None and verdict.wait_ms == 0
    assert_paced(await limits.pace("c:t", [rule], BLOCK, 0), "wait", 300, clock)


async def test_settle_corrects_a_paced_token_booking(limits):
    def tokens(amount: int) -> Rule:
        return paced(1000, 400, amount, "tpm")

    assert (await limits.pace("a:t", [tokens(900)], BLOCK, 0)).wait_ms == 0
    assert (await limits.pace("b:t", [tokens(200)], BLOCK, 0)).refused == "wait"
    await limits.settle("a:t", [(tokens(900), 100)])
    assert (await limits.pace("c:t", [tokens(900)], BLOCK, 0)).wait_ms == 0
    assert (await limits.pace("d:t", [tokens(1)], BLOCK, 0)).refused == "wait"
