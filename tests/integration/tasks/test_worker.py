"""The worker survives whatever arrives on its subjects, bounds what it records, ends when
its connection is gone and never "starts" without its consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import jsflow
from jsflow._js import api
from jsflow.errors import ConnectionClosedError, ServerError, TaskFailedError
from jsflow.tasks.app import App
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    H_SCHEDULE_ID,
    H_STATE_REVISION,
    H_TASK_ID,
    MAX_AGE_METADATA,
    TASK_STREAM,
    request_subject,
)
from jsflow.tasks.worker import MAX_ERROR_MESSAGE, MAX_ERROR_TYPE, durable_name
from tests.support.names import uniq
from tests.support.polling import running_jsflow_tasks
from tests.support.streams import drained

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    "headers",
    [
        {H_TASK_ID: "bad id!"},
        {H_TASK_ID: ""},
        {H_TASK_ID: "x" * 5000},
        {H_TASK_ID: "a..b"},
        {H_SCHEDULE_ID: "no spaces allowed"},
        {H_SCHEDULE_ID: "s" * 5000},
    ],
    ids=["characters", "empty", "5000-chars", "empty-token", "schedule-chars", "schedule-long"],
)
async def test_request_with_an_illegal_id_is_terminated_and_the_worker_goes_on(
    jsflow_client: jsflow.Client, headers: dict[str, str]
) -> None:
    app = App(jsflow_client)
    calls: list[int] = []

    @app.task(name=uniq("ids"))
    async def work(x: int) -> int:
        calls.append(x)
        return x

    async with asyncio.timeout(30), app.worker(concurrency=2):
        # when a request arrives whose id header no key or subject may carry
        payload = work.codec.encode_args((1,), {})
        await jsflow_client.js.publish(request_subject(work.name), payload, headers=headers)
        # then it is terminated at once (not left to redeliver), without running
        info = await drained(jsflow_client, durable_name(work.name))
        assert info.num_redelivered == 0
        assert calls == []
        # and the worker and its connection go on
        handle = await work.submit(2)
        assert await handle.result(timeout=10) == 2
    assert jsflow_client.is_connected
    assert calls == [2]


async def test_request_for_another_tasks_id_leaves_that_task_untouched(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client)
    ran: list[str] = []

    @app.task(name=uniq("charge"))
    async def charge(amount: int) -> str:
        ran.append("charge")
        return "charged"

    @app.task(name=uniq("email"))
    async def email(amount: int) -> str:
        ran.append("email")
        return "sent"

    backend = await app.backend()
    async with asyncio.timeout(30), app.worker(tasks=[email.name]):
        pending = await charge.submit(100)
        state = await backend.store.get(pending.id)
        assert state is not None
        # when requests on email's subject name the pending charge task (its arguments,
        # then its whole state as a request carries it)
        await jsflow_client.js.publish(
            request_subject(email.name, pending.id),
            bytes(state.args),
            headers={H_TASK_ID: pending.id},
        )
        info = await backend.store.info(pending.id)
        assert info is not None
        await jsflow_client.js.publish(
            request_subject(email.name, pending.id) + ".carried",
            bytes(state.SerializeToString()),
            headers={H_TASK_ID: pending.id, H_STATE_REVISION: str(info.revision)},
        )
        # then both are terminated: email does not run, charge stays pending as it was
        await drained(jsflow_client, durable_name(email.name))
    assert ran == []
    after = await backend.store.info(pending.id)
    assert after is not None
    assert (after.status, after.attempt, after.revision) == (TaskStatus.PENDING, 0, info.revision)


async def test_huge_error_is_recorded_truncated_once_per_retry(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client)
    calls: list[int] = []

    @app.task(name=uniq("huge"), retries=1, backoff=0.0)
    async def explode() -> None:
        calls.append(1)
        raise ValueError("boom " * (2 * 1024 * 1024 // 5))  # a 2 MiB message

    async with asyncio.timeout(30), app.worker():
        handle = await explode.submit()
        with pytest.raises(TaskFailedError) as failed:
            await handle.result(timeout=20)
    assert calls == [1, 1]  # the first attempt and its one retry, nothing more
    assert failed.value.error_type == "ValueError"
    assert failed.value.error_message.startswith("boom boom")
    assert len(failed.value.error_message.encode()) <= MAX_ERROR_MESSAGE
    info = await handle.info()
    assert (info.status, info.attempt, info.error_type) == (TaskStatus.FAILED, 2, "ValueError")


async def test_exception_with_a_huge_type_name_is_recorded_truncated(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client)
    odd = type("E" * 1000, (Exception,), {})

    @app.task(name=uniq("odd"), retries=0)
    async def explode() -> None:
        raise odd("bad")

    async with asyncio.timeout(30), app.worker():
        handle = await explode.submit()
        with pytest.raises(TaskFailedError) as failed:
            await handle.result(timeout=20)
    assert failed.value.error_type.startswith("EEEE")
    assert len(failed.value.error_type) <= MAX_ERROR_TYPE
    assert failed.value.error_message == "bad"


@pytest.mark.parametrize("how", ["client.close", "nc.close"])
async def test_worker_run_ends_when_its_connection_is_closed_for_good(
    jsflow_server: jsflow.EmbeddedServer, how: str
) -> None:
    before = running_jsflow_tasks()
    client = await jsflow.connect(jsflow_server.url)
    app = App(client)
    started = asyncio.Event()

    @app.task(name=uniq("forever"))
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    worker = app.worker()
    run = asyncio.get_running_loop().create_task(worker.run())
    async with asyncio.timeout(30):
        await forever.submit()
        await started.wait()  # an attempt is in flight
        # when the connection closes for good
        if how == "client.close":
            await client.close()
        else:
            await client.nc.close()
        # then run() ends with a typed error instead of retrying forever
        with pytest.raises(ConnectionClosedError):
            await run
        for _ in range(100):  # callbacks of closing subscriptions finish on their own
            if not running_jsflow_tasks() - before:
                break
            await asyncio.sleep(0.05)
    assert running_jsflow_tasks() - before == set()
    await client.close()


async def test_worker_consumer_has_a_bounded_max_deliver(jsflow_client: jsflow.Client) -> None:
    app = App(jsflow_client)

    @app.task(name=uniq("bounded"), retries=2)
    async def bounded() -> None:
        return None

    async with asyncio.timeout(30), app.worker():
        info = await jsflow_client.js.consumer_info(TASK_STREAM, durable_name(bounded.name))
    # retries + 1 attempts, 3 deliveries for crashed workers, then 2 more for the worker to
    # record the task DEAD before the server gives up on the request
    assert info.config.max_deliver == 2 + 1 + 3 + 2


async def _task_stream(client: jsflow.Client, **overrides: Any) -> None:
    await client.js.add_stream(
        api.StreamConfig(
            name=TASK_STREAM,
            subjects=["task.>"],
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
            allow_atomic=True,
            allow_msg_schedules=True,
            allow_msg_ttl=True,
            metadata={MAX_AGE_METADATA: repr(7 * 24 * 3600.0)},
            **overrides,
        )
    )


async def test_worker_fails_loudly_when_the_stream_refuses_its_consumer() -> None:
    async with asyncio.timeout(60), jsflow.EmbeddedServer() as server:
        client = await jsflow.connect(server.url)
        async with client:
            # given a task stream that has no room for another consumer
            await _task_stream(client, max_consumers=1)
            app = App(client)

            @app.task(name="first")
            async def first() -> None:
                return None

            @app.task(name="second")
            async def second() -> None:
                return None

            # when a worker needs two consumers, then starting it fails, naming the
            # durable and the server's reason, and leaves nothing running
            with pytest.raises(ServerError) as refused:
                async with app.worker():
                    pass
            assert "maximum consumers limit reached" in str(refused.value)
            assert durable_name("second") in str(refused.value)


async def test_worker_shares_an_existing_consumer_it_may_not_update() -> None:
    async with asyncio.timeout(60), jsflow.EmbeddedServer() as server:
        client = await jsflow.connect(server.url)
        async with client:
            await _task_stream(client)
            app = App(client)

            @app.task(name="shared")
            async def shared(x: int) -> int:
                return x

            # given the durable exists with a deliver policy the server will not update
            await client.js.add_consumer(
                TASK_STREAM,
                api.ConsumerConfig(
                    durable_name=durable_name("shared"),
                    filter_subjects=[request_subject("shared"), request_subject("shared") + ".>"],
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.NEW,
                ),
            )
            # then a worker binds it as it is and runs the task
            async with app.worker():
                handle = await shared.submit(3)
                assert await handle.result(timeout=10) == 3
