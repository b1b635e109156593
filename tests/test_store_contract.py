"""The store contract: every store (SQLite, Redis) behaves the same."""

import asyncio
import time

from icm.store import Binding


async def test_learned_binding_last_conversation_wins(store):
    assert await store.binding("+79161234567") is None
    assert await store.learn("+79161234567", "101", 1000.0, "inbound call")
    assert await store.learn("+79161234567", "102", 2000.0)
    # An older conversation arriving late does not overwrite a newer one.
    assert not await store.learn("+79161234567", "103", 1500.0)
    binding = await store.binding("+79161234567")
    assert binding == Binding("+79161234567", "102", False, 2000.0, "")


async def test_retention_hides_old_learned_bindings(store):
    await store.learn("+79161234567", "101", 1000.0)
    assert await store.binding("+79161234567", learned_since=999.0) is not None
    assert await store.binding("+79161234567", learned_since=1001.0) is None


async def test_pinned_wins_over_learned_and_ignores_retention(store):
    await store.learn("+79161234567", "101", time.time())
    await store.pin("+79161234567", "104", "VIP, keep with Gleb")
    binding = await store.binding("+79161234567", learned_since=time.time() + 100)
    assert binding is not None
    assert (binding.target, binding.pinned, binding.note) == ("104", True, "VIP, keep with Gleb")
    assert [b.number for b in await store.bindings(pinned=True)] == ["+79161234567"]
    assert await store.unpin("+79161234567")
    assert not await store.unpin("+79161234567")
    assert (await store.binding("+79161234567")).target == "101"


async def test_pinned_external_number(store):
    await store.pin("+79161234567", "+79035550000")
    assert (await store.binding("+79161234567")).target == "+79035550000"


async def test_forget_and_purge(store):
    await store.learn("+79161111111", "101", 1000.0)
    await store.learn("+79162222222", "102", 5000.0)
    assert await store.forget("+79161111111")
    assert not await store.forget("+79161111111")
    await store.learn("+79163333333", "103", 2000.0)
    assert await store.purge_learned(before=3000.0) == 1
    learned = await store.bindings(pinned=False)
    assert [b.number for b in learned] == ["+79162222222"]


async def test_bindings_newest_first_with_limit(store):
    for i in range(5):
        await store.learn(f"+7916000000{i}", "101", 1000.0 + i)
    rows = await store.bindings(pinned=False, limit=3)
    assert [r.number for r in rows] == ["+79160000004", "+79160000003", "+79160000002"]


async def test_key_values_expire(store):
    assert await store.get("k") is None
    await store.set("k", "v")
    assert await store.get("k") == "v"
    # TTLs of a second: a busy machine may pause this test for tens of milliseconds.
    await store.set("t", "v", ttl_s=1.0)
    assert await store.get("t") == "v"
    await asyncio.sleep(1.2)
    assert await store.get("t") is None
    assert await store.delete("k", "t", "none") == 1


async def test_add_is_set_if_absent(store):
    assert await store.add("claim:1", "a", ttl_s=1.0)
    assert not await store.add("claim:1", "b", ttl_s=1.0)
    assert await store.get("claim:1") == "a"
    await asyncio.sleep(1.2)
    assert await store.add("claim:1", "b", ttl_s=1)
    assert await store.get("claim:1") == "b"


async def test_concurrent_adds_have_one_winner(store):
    results = await asyncio.gather(*(store.add("claim:x", str(i), ttl_s=5) for i in range(20)))
    assert results.count(True) == 1


async def test_claim_is_set_if_absent_or_already_ours(store):
    assert await store.claim("claim:2", "a:1", ttl_s=1.0)
    assert await store.claim("claim:2", "a:1", ttl_s=1.0)  # a retry of the same claim
    assert not await store.claim("claim:2", "b:1", ttl_s=1.0)
    assert await store.get("claim:2") == "a:1"
    await asyncio.sleep(1.2)
    assert await store.claim("claim:2", "b:1", ttl_s=1)
    assert not await store.claim("claim:2", "a:1", ttl_s=1)
    results = await asyncio.gather(*(store.claim("claim:y", str(i), ttl_s=5) for i in range(20)))
    assert results.count(True) == 1


async def test_incr_counts_within_a_fixed_window(store):
    assert await store.incr("rate:x", ttl_s=1.0) == 1
    await asyncio.sleep(0.3)
    assert await store.incr("rate:x", ttl_s=1.0) == 2
    assert await store.get("rate:x") == "2"
    await asyncio.sleep(0.9)  # 1.2 s after the first: counting did not extend the window
    assert await store.incr("rate:x", ttl_s=1.0) == 1


async def test_concurrent_incrs_are_atomic(store):
    results = await asyncio.gather(*(store.incr("rate:y", ttl_s=5) for _ in range(30)))
    assert sorted(results) == list(range(1, 31))


async def test_learn_many_is_learn_row_by_row(store):
    older_first = [
        ("+79161111111", "101", 1000.0, "a"),
        ("+79161111111", "102", 2000.0, "b"),  # newer: wins
        ("+79162222222", "103", 3000.0, "c"),
        ("+79162222222", "104", 2500.0, "d"),  # older than the row before: ignored
    ]
    assert await store.learn_many(older_first) == [True, True, True, False]
    assert (await store.binding("+79161111111")).target == "102"
    assert (await store.binding("+79162222222")).target == "103"
    assert await store.learn_many([]) == []
    many = [(f"+7916{n:07d}", "101", 5000.0 + n, "") for n in range(1, 2501)]  # > 1 statement
    many[1300] = ("+79161111111", "105", 500.0, "")  # older than what is kept
    changed = await store.learn_many(many)
    assert changed == [i != 1300 for i in range(2500)]
    assert len(await store.bindings(pinned=False, limit=5000)) == 2 + 2499
