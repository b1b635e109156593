"""Redis goes away in the middle of traffic: nothing crashes, calls are still routed,
learned calls wait in a bounded buffer and are written when Redis returns."""

import time

import aiohttp

from icm.store.redis import RedisStore

from .conftest import until


async def readiness(daemon):
    url = f"http://127.0.0.1:{daemon.http.port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_routing_goes_on_while_redis_is_down(pbx, own_redis, make_config, start_daemon):
    pbx.register("101", "102")
    config = make_config(pbx.port, store={"url": own_redis.url}, routing={"default_number": "102"})
    daemon = await start_daemon(config)
    await daemon.store.learn("+79161234567", "101", time.time())
    assert (await pbx.call("89161234567")).dials == [("SIP/101", "ANSWER")]
    status, report = await readiness(daemon)
    assert (status, report["status"], report["store"]) == (200, "ready", "ok")
    await until(lambda: daemon.metrics.learned._value.get() == 1)  # that call is written

    own_redis.stop()
    # The known client can't be looked up: icmdb is skipped, the call still goes somewhere.
    placed = await pbx.call("89161234567")
    assert placed.status == "ANSWERED" and placed.dials == [("SIP/102", "ANSWER")]
    assert daemon.metrics.source_lookups.labels("icmdb", "error")._value.get() == 1
    # Claims cannot be made: the instance answers anyway (a duplicate beats silence).
    assert daemon.metrics.claims.labels("route", "unavailable")._value.get() == 1
    # A new caller answered by 102 is learned into the buffer meanwhile.
    assert (await pbx.call("89035550000")).status == "ANSWERED"
    await until(lambda: daemon.learner.pending == 2)
    await daemon._check_store()
    status, report = await readiness(daemon)
    assert (status, report["status"], report["store"]) == (200, "degraded", "unavailable")
    assert report["learn_buffer"] == 2
    assert daemon.metrics.store_up._value.get() == 0
    assert daemon.ami.logged_in

    own_redis.start()  # empty (no persistence), on the same port
    await until(lambda: daemon.learner.pending == 0, timeout=15)
    store = RedisStore(own_redis.url)
    await store.open()
    assert (await store.binding("+79035550000")).target == "102"
    assert (await store.binding("+79161234567")).target == "102"
    await store.close()
    await daemon._check_store()
    assert (await readiness(daemon))[1]["status"] == "ready"
    assert (await pbx.call("89035550000")).variables["ICM_SOURCE"] == "icmdb"


async def test_explanation_says_why_icmdb_was_skipped(own_redis, make_config, tmp_path):
    from icm.metrics import Metrics
    from icm.model import RouteRequest
    from icm.snapshot import Snapshot

    config = make_config(store={"url": own_redis.url})
    store = config.store.open()
    await store.open()
    own_redis.stop()
    snapshot = Snapshot.build(config, store, Metrics(), lambda ext: None)
    import asyncio

    loop = asyncio.get_running_loop()
    decision = await snapshot.router.route(
        RouteRequest("1", "89161234567", deadline=loop.time() + 0.5)
    )
    [step] = decision.steps
    assert (step.source, step.outcome) == ("icmdb", "error")
    assert "store unavailable" in step.detail and "Redis" in step.detail
    await store.close()


async def test_a_hung_redis_still_leaves_calls_answered_in_time(pbx, make_config, start_daemon):
    """Redis accepts connections and never answers: claims wait two thirds of the budget and
    are granted, icmdb is cut, and the call gets its answer before the dialplan gives up."""
    import asyncio

    async def hang(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    pbx.register("101", "102")
    # Redis's own socket timeout longer than the claim's: the claim timeout is what acts.
    config = make_config(pbx.port, store={"url": url, "timeout_ms": 1000})
    daemon = await start_daemon(config)
    placed = await pbx.call("89161234567")
    # The daemon answered (the budget cut icmdb: TIMEOUT, back to the scenario) before the
    # dialplan's own wait ran out.
    assert placed.variables["WAITFORCONDITIONSTATUS"] == "TRUE"
    assert placed.variables["ICM_REPLY"].split("|")[1] == "TIMEOUT"
    assert placed.reached == [("Queue", ["reception"])]
    assert daemon.metrics.claims.labels("route", "unavailable")._value.get() == 1
    assert daemon.metrics.source_lookups.labels("icmdb", "cut")._value.get() == 1
    server.close()
