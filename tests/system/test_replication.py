"""Replication on a 3-node cluster: what jsflow creates follows ``connect(replicas=)``, and
tasks, locks and flows keep their promises when the node leading their stream is killed."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

import jsflow
from jsflow.flow.dead_letter import DeadLetter
from jsflow.tasks.streams import TASK_STREAM, state_bucket, task_token
from tests.support.cluster import (
    TRANSIENT,
    connect,
    healed,
    kill_leader_of,
    outcome,
    replicas,
    restart,
    retry,
    wait_for,
)
from tests.support.names import uniq

pytestmark = pytest.mark.cluster
T = TypeVar("T")


# -- 1. replica counts ------------------------------------------------------------------------


async def test_every_bucket_and_stream_jsflow_creates_follows_the_client_replicas(
    cluster: jsflow.LocalCluster,
) -> None:
    async with asyncio.timeout(90):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client:
            assert client.replicas == 3
            expected: dict[str, int] = {}

            # given one of everything jsflow creates, on a client with replicas=3
            app = jsflow.App(client, uniq("rep"))
            backend = await retry(app.backend)
            await retry(lambda: backend.artifacts.put(uniq("art"), b"payload"))
            expected[TASK_STREAM] = 3
            expected[f"KV_{state_bucket(app.scope)}"] = 3
            expected["OBJ_jsflow_artifacts"] = 3

            locks = uniq("locks")
            lock = client.lock(uniq("l"), bucket=locks)
            assert await retry(lambda: lock.acquire(timeout=10))
            await lock.release()
            expected[f"KV_{locks}"] = 3

            sems = uniq("sems")
            sem = client.semaphore(uniq("s"), 2, bucket=sems)
            assert await retry(lambda: sem.acquire(timeout=10))
            await sem.release()
            expected[f"KV_{sems}"] = 3

            elections = uniq("elections")
            election = client.election(uniq("e"), bucket=elections)
            assert await retry(lambda: election.campaign(timeout=10))
            await election.resign()
            expected[f"KV_{elections}"] = 3

            groups = uniq("groups")
            group = client.wait_group(uniq("w"), bucket=groups)
            assert await retry(lambda: group.add(1)) == 1
            await retry(group.done)
            expected[f"KV_{groups}"] = 3

            limits = uniq("limits")
            limiter = client.rate_limiter(uniq("r"), 100, bucket=limits)
            assert (await retry(lambda: limiter.acquire("k"))).allowed
            expected[f"KV_{limits}"] = 3

            counter = client.counter(uniq("c"))
            assert await retry(lambda: counter.add("k", 2)) == 2
            expected[counter.stream if counter.native else f"KV_{counter.bucket}"] = 3

            kv = uniq("kv")
            store = await retry(lambda: client.object_store(kv, int))
            await retry(lambda: store.put("k", 1))
            expected[f"KV_{kv}"] = 3

            # a flow opens its source, its sink's stream and its dead-letter stream
            name = uniq("flow")
            flow = jsflow.FlowHandler(
                client,
                source=jsflow.StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", int),
                sink=jsflow.StreamSink(f"out.{name}", stream=f"OUT_{name}"),
                dead_letter=f"dl.{name}",
                dead_letter_stream=f"DL_{name}",
            )

            async def run_flow() -> None:
                async with flow:
                    pass

            await retry(run_flow)
            expected.update({f"IN_{name}": 3, f"OUT_{name}": 3, f"DL_{name}": 3})

            # and objects that name their own replica count
            own = uniq("own_locks")
            lock1 = client.lock(uniq("l"), bucket=own, replicas=1)
            assert await retry(lambda: lock1.acquire(timeout=10))
            await lock1.release()
            expected[f"KV_{own}"] = 1

            app1 = jsflow.App(client, uniq("rep1"), replicas=1)
            await retry(app1.backend)
            expected[f"KV_{state_bucket(app1.scope)}"] = 1  # the task stream exists: R3

            kv1 = uniq("kv1")
            await retry(lambda: client.object_store(kv1, int, replicas=1))
            expected[f"KV_{kv1}"] = 1

            counter1 = client.counter(uniq("c1"), replicas=1)
            await retry(lambda: counter1.add("k"))
            expected[counter1.stream if counter1.native else f"KV_{counter1.bucket}"] = 1

            src1 = uniq("src1")
            source1 = jsflow.StreamSource(f"IN_{src1}", f"in.{src1}", f"d_{src1}", int, replicas=1)
            await retry(lambda: source1.open(client))
            await source1.close()
            expected[f"IN_{src1}"] = 1

            sink1 = uniq("sink1")
            await retry(
                lambda: jsflow.StreamSink(f"out.{sink1}", stream=f"OUT_{sink1}", replicas=1).open(
                    client
                )
            )
            expected[f"OUT_{sink1}"] = 1

            dl1 = uniq("dl1")
            await retry(lambda: DeadLetter(f"dl.{dl1}", f"DL_{dl1}", replicas=1).open(client))
            expected[f"DL_{dl1}"] = 1

            # then each stream has the replica count it was created with
            got = {s: await retry(lambda s=s: replicas(client, s)) for s in expected}
            assert got == expected


# -- 2. tasks ---------------------------------------------------------------------------------


async def _submit(
    fn: Any,  # a TaskFunction
    args: tuple[Any, ...],
    task_id: str,
    depends_on: list[str] | None = None,
) -> jsflow.TaskHandle[Any]:
    """Submit until the request is durable, always with the same id (idempotent)."""
    return await retry(
        lambda: fn.submit_with(args, task_id=task_id, depends_on=depends_on), attempts=200
    )


async def _event_kinds(handle: jsflow.TaskHandle[Any]) -> list[str]:
    async def read() -> list[str]:
        return [e.kind async for e in handle.events(idle_timeout=10)]

    return await retry(read, attempts=20)


async def test_tasks_survive_the_loss_of_a_node(cluster: jsflow.LocalCluster) -> None:
    async with asyncio.timeout(110):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client, await connect(cluster) as worker_client:
            # given an app on R3 streams with quick tasks, dependent ones and a flaky one
            submitted_app = jsflow.App(client, uniq("survive"))
            worker_app = jsflow.App(worker_client, submitted_app.name)
            attempts: Tally[str] = Tally()

            def register(app: jsflow.App) -> dict[str, Any]:
                @app.task(name="quick", retries=2, backoff=0.1)
                async def quick(i: int) -> int:
                    await asyncio.sleep(0.3)
                    return i * 2

                @app.task(name="after", retries=2, backoff=0.1)
                async def after(i: int) -> int:
                    await asyncio.sleep(0.02)
                    return i + 1000

                @app.task(name="flaky", retries=2, backoff=0.1)
                async def flaky() -> str:
                    attempts[jsflow.current_task().id] += 1
                    if jsflow.current_task().attempt <= 1:
                        raise RuntimeError("fails once")
                    return "ok"

                return {"quick": quick, "after": after, "flaky": flaky}

            fns = register(submitted_app)
            register(worker_app)
            await retry(submitted_app.backend)
            await retry(worker_app.backend)

            run = uuid.uuid4().hex[:8]
            plan: list[tuple[str, tuple[Any, ...], str, list[str] | None, Any]] = []
            for i in range(45):
                plan.append(("quick", (i,), f"q{i}-{run}", None, i * 2))
                if i % 3 == 2:  # 15 tasks that wait for the quick one before them
                    plan.append(("after", (i,), f"a{i}-{run}", [f"q{i}-{run}"], i + 1000))
            plan.insert(20, ("flaky", (), f"flaky-{run}", None, "ok"))
            handles: dict[str, jsflow.TaskHandle[Any]] = {}

            async def submit_all() -> None:
                for name, args, task_id, deps, _ in plan:
                    handles[task_id] = await _submit(fns[name], args, task_id, deps)
                    await asyncio.sleep(0.03)

            async with worker_app.worker(concurrency=4, ack_wait=5):
                submitter = asyncio.create_task(submit_all())
                try:
                    assert await wait_for(lambda: len(handles) >= 15 or submitter.done(), 30)
                    # when the node leading the task stream dies while tasks run, then returns
                    victim = await kill_leader_of(cluster, client, TASK_STREAM)
                    await wait_for(lambda: len(handles) >= 40 or submitter.done(), 20)
                    await restart(cluster, victim)
                    await asyncio.wait_for(submitter, 60)
                finally:
                    if not submitter.done():
                        submitter.cancel()
                        await asyncio.gather(submitter, return_exceptions=True)

                # then every task finishes with its result: none is lost
                deadline = time.monotonic() + 60
                outcomes = await asyncio.gather(
                    *(outcome(handles[task_id], deadline) for _, _, task_id, _, _ in plan)
                )
            wrong = {
                task_id: got
                for (_, _, task_id, _, want), got in zip(plan, outcomes, strict=True)
                if got != want
            }
            assert not wrong, f"{len(wrong)} of {len(plan)} tasks did not succeed: {wrong}"
            assert attempts[f"flaky-{run}"] >= 2

            # and every task's events end with one completed event
            kinds = await asyncio.gather(*(_event_kinds(handles[t]) for _, _, t, _, _ in plan))
            endings = {t: k[-1:] for (_, _, t, _, _), k in zip(plan, kinds, strict=True)}
            assert all(e == ["completed"] for e in endings.values()), endings
            for name in ("quick", "after", "flaky"):
                token = task_token(submitted_app.scope, name)
                info = await retry(
                    lambda token=token: client.js.stream_info(
                        TASK_STREAM, subjects_filter=f"task.completed.{token}.>"
                    )
                )
                counts = dict(info.state.subjects or {})
                want = {f"task.completed.{token}.{t}" for n, _, t, _, _ in plan if n == name}
                assert set(counts) == want
                twice = {s: c for s, c in counts.items() if c != 1}
                assert not twice, f"tasks with more than one completed event: {twice}"
            await healed(client, TASK_STREAM)


# -- 3. locks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    who: int
    token: int
    acquired: float  # time.monotonic() once acquire() returned
    checked: float  # time.monotonic() when ``held`` was read, just before release()
    held: bool


async def _holder(
    who: int,
    client: jsflow.Client,
    name: str,
    stop: asyncio.Event,
    holds: list[Hold],
    errors: list[BaseException],
) -> None:
    """Acquire, hold briefly, release: until told to stop, recording every hold."""
    lock = client.lock(name, ttl=2)
    while not stop.is_set():
        try:
            got = await lock.acquire(timeout=5)
        except TRANSIENT as exc:
            errors.append(exc)
            await asyncio.sleep(0.1)
            continue
        if not got:
            continue
        acquired = time.monotonic()
        token = lock.fencing_token
        await asyncio.sleep(0.02)
        held = lock.held
        holds.append(Hold(who, token, acquired, time.monotonic(), held))
        try:
            await lock.release()
        except jsflow.LockLostError:
            pass
        except TRANSIENT as exc:
            errors.append(exc)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)  # let the other holder contend


async def test_lock_fencing_tokens_increase_across_a_leader_kill(
    cluster: jsflow.LocalCluster,
) -> None:
    async with asyncio.timeout(100):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as a, await connect(cluster) as b:
            # given two clients taking turns on one lock of the R3 jsflow_locks bucket
            name = uniq("fenced")
            probe = a.lock(uniq("probe"))
            assert await retry(lambda: probe.acquire(timeout=10))
            await probe.release()
            assert await retry(lambda: replicas(a, "KV_jsflow_locks")) == 3
            holds: list[Hold] = []
            errors: list[BaseException] = []
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(_holder(i, c, name, stop, holds, errors))
                for i, c in enumerate((a, b))
            ]
            try:
                assert await wait_for(lambda: len(holds) >= 10, 30), "no progress at all"
                # when the node leading the bucket is killed mid-way, then restarted
                victim = await kill_leader_of(cluster, a, "KV_jsflow_locks")
                at_kill = len(holds)
                after_kill = await wait_for(lambda: len(holds) >= at_kill + 10, 30)
                await restart(cluster, victim)
                at_restart = len(holds)
                after_restart = await wait_for(lambda: len(holds) >= at_restart + 10, 30)
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*loops), 30)
            assert after_kill, f"no holder after the leader died ({len(holds)} holds, {errors})"
            assert after_restart, f"no holder after the restart ({len(holds)} holds, {errors})"

            # then successive holders' fencing tokens strictly increase
            ordered = sorted(holds, key=lambda h: h.acquired)
            tokens = [h.token for h in ordered]
            assert all(x < y for x, y in itertools.pairwise(tokens)), tokens
            # and no holder believed it held the lock while another one did
            believed = [h for h in ordered if h.held]
            for i, x in enumerate(believed):
                for y in believed[i + 1 :]:
                    if y.acquired >= x.checked:
                        break
                    assert x.who == y.who, f"two holders at once: {x} and {y}"
            assert {h.who for h in holds} == {0, 1}
            await healed(a, "KV_jsflow_locks")


# -- 4. flows ---------------------------------------------------------------------------------


async def test_a_flow_loses_no_message_when_a_node_dies(cluster: jsflow.LocalCluster) -> None:
    async with asyncio.timeout(100):
        await cluster.wait_jetstream_ready()
        async with await connect(cluster) as client, await connect(cluster) as producer:
            # given a flow over an R3 source
            name = uniq("survive")
            stream, subject = f"IN_{name}", f"in.{name}"
            processed: set[int] = set()

            async def record(msg: jsflow.Message[int]) -> int:
                processed.add(msg.data)
                await asyncio.sleep(0.1)  # messages are in flight when the node dies
                return msg.data

            source = jsflow.StreamSource(
                stream, subject, f"d_{name}", int, fetch_timeout=0.25, ack_wait=5
            )
            sink = jsflow.StreamSink(f"out.{name}", stream=f"OUT_{name}")
            flow = jsflow.FlowHandler(
                client, source=source, stages=[record], sink=sink, concurrency=8, backoff=[0.1]
            )
            published: list[int] = []

            async def publish(i: int) -> None:
                await producer.js.publish(
                    subject, str(i).encode(), headers={"Nats-Msg-Id": f"{name}-{i}"}, timeout=2
                )

            async def publish_all() -> None:
                for i in range(200):
                    await retry(lambda i=i: publish(i), attempts=200)
                    published.append(i)
                    await asyncio.sleep(0.01)

            async def start_flow() -> jsflow.FlowHandler:
                await flow.__aenter__()
                return flow

            await retry(start_flow)
            try:
                assert await retry(lambda: replicas(client, stream)) == 3
                publisher = asyncio.create_task(publish_all())
                try:
                    assert await wait_for(lambda: len(processed) >= 40, 30), "no progress"
                    # when the node leading the source stream dies during processing, then returns
                    victim = await kill_leader_of(cluster, client, stream)
                    await wait_for(lambda: len(published) >= 150 or publisher.done(), 20)
                    await restart(cluster, victim)
                    await asyncio.wait_for(publisher, 60)
                finally:
                    if not publisher.done():
                        publisher.cancel()
                        await asyncio.gather(publisher, return_exceptions=True)
                # then every published message is processed at least once
                everything = await wait_for(lambda: processed >= set(published), 60)
            finally:
                await flow.__aexit__(None, None, None)
            assert len(published) == 200
            missing = sorted(set(published) - processed)
            assert everything and not missing, f"{len(missing)} messages never processed: {missing}"
            # and every output is in the sink stream exactly once (redeliveries are deduped
            # by the outputs' Nats-Msg-Id)
            outputs = await retry(lambda: client.js.stream_info(f"OUT_{name}"))
            redelivered = len(published) and flow.metrics.redelivered
            print(f"\n[flow failover] outputs {outputs.state.messages}, redelivered {redelivered}")
            assert outputs.state.messages == 200
            await healed(client, stream)
