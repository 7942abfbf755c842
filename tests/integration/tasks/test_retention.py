"""Retention of finished tasks and their artifacts, one event log per task, fast starts."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable

import nats.js.errors
import pytest

import jsflow
from jsflow._proto import task_pb2
from jsflow.tasks.app import App
from jsflow.tasks.errors import TaskNotFoundError
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    ARTIFACT_BUCKET,
    DEFAULT_APP,
    H_TASK_ID,
    TASK_STREAM,
    request_subject,
    state_bucket,
    task_filter,
    task_token,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _state_headers(app: App, task_id: str) -> dict[str, str]:
    """Headers of the stored state of ``app``'s task ``task_id`` (in the app's bucket)."""
    assert app.client is not None
    bucket = state_bucket(app.scope)
    msg = await app.client.js.get_msg(
        f"KV_{bucket}", subject=f"$KV.{bucket}.{task_id}", direct=True
    )
    return dict(msg.headers or {})


def _artifact_name(app: App, name: str) -> str:
    """The object name of ``app``'s artifact ``name`` (an app other than the default one
    prefixes its artifacts with its name: two apps may use one task id)."""
    return name if app.scope == DEFAULT_APP else f"{app.scope}/{name}"


async def _artifact_headers(app: App, name: str) -> dict[str, str] | None:
    """Headers of the metadata message of ``app``'s artifact ``name``, ``None`` when the
    artifact is gone."""
    client = app.client
    assert client is not None
    encoded = base64.urlsafe_b64encode(_artifact_name(app, name).encode()).decode()
    try:
        msg = await client.js.get_msg(
            f"OBJ_{ARTIFACT_BUCKET}", subject=f"$O.{ARTIFACT_BUCKET}.M.{encoded}", direct=True
        )
    except nats.js.errors.NotFoundError:
        return None
    if not msg.data or json.loads(msg.data).get("deleted"):
        return None
    return dict(msg.headers or {})


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 15) -> None:
    """Poll an async predicate until true (bounded): server TTLs expire on a ~1 s tick, and
    artifacts are settled just after the terminal write that ``result()`` observes."""
    for _ in range(int(limit / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {limit}s")


async def test_retention_must_be_at_least_a_second_or_none() -> None:
    # given the retention rules, then sub-second values are refused before any I/O
    with pytest.raises(jsflow.ConfigError):
        App(None, "t", retention=0.5)
    with pytest.raises(jsflow.ConfigError):
        App(None, "t", retention=dt.timedelta(milliseconds=10))
    # and a timedelta, a number or None are accepted
    assert App(None, "t", retention=dt.timedelta(hours=2)).retention == 7200.0
    assert App(None, "t", retention=5).retention == 5.0
    assert App(None, "t", retention=None).retention is None
    assert App(None, "t").retention == 24 * 3600.0


async def test_finished_task_state_expires_after_retention(jsflow_client: jsflow.Client) -> None:
    # given an app keeping finished tasks for one second
    app = App(jsflow_client, "t", retention=1)

    @app.task(name=uniq("short"))
    async def short(x: int) -> int:
        return x + 1

    handle = await short.submit(1)
    # while pending, its state has no TTL (a queued task never expires)
    assert "Nats-TTL" not in await _state_headers(app, handle.id)
    async with app.worker():
        assert await handle.result(timeout=10) == 2
    # when it finished, the terminal write carries the retention as a per-key TTL
    assert (await _state_headers(app, handle.id)).get("Nats-TTL") == "1s"
    backend = await app.backend()

    async def gone() -> bool:
        return await backend.store.get(handle.id) is None

    # then the server removes the state on its own
    await _eventually(gone, "state expiry")
    with pytest.raises(TaskNotFoundError):
        await handle.status()


async def test_retention_none_keeps_finished_tasks(jsflow_client: jsflow.Client) -> None:
    # given an app that keeps tasks forever
    app = App(jsflow_client, "t", retention=None)

    @app.task(name=uniq("keep"))
    async def keep() -> str:
        return "kept"

    async with app.worker():
        handle = await keep.submit()
        assert await handle.result(timeout=10) == "kept"
    # then its terminal state carries no TTL
    assert "Nats-TTL" not in await _state_headers(app, handle.id)


async def test_cancelled_pending_task_expires_with_retention(jsflow_client: jsflow.Client) -> None:
    # given a pending task of an app with a 1 s retention
    app = App(jsflow_client, "t", retention=1)

    @app.task(name=uniq("cancelme"))
    async def cancelme() -> None:
        return None

    handle = await cancelme.submit()
    # when it is cancelled, the cancelling write carries the TTL
    assert await handle.cancel() is True
    assert (await _state_headers(app, handle.id)).get("Nats-TTL") == "1s"
    assert await handle.status() is TaskStatus.CANCELLED


async def test_artifacts_follow_their_task_retention(jsflow_client: jsflow.Client) -> None:
    # given an app with a small artifact threshold and a 1 s retention
    app = App(jsflow_client, "t", artifact_threshold=1024, retention=1)

    @app.task(name=uniq("bigart"))
    async def bigart(blob: str) -> str:
        return blob * 2

    arg = "y" * 5000
    async with app.worker():
        handle = await bigart.submit(arg)
        # when it succeeded
        assert await handle.result(timeout=20) == arg * 2
    # then its result was written with the state's lifetime (retention + margin)
    headers = await _artifact_headers(app, f"{handle.id}.result")
    assert headers is not None and headers.get("Nats-TTL") == "61s"

    async def args_deleted() -> bool:
        return await _artifact_headers(app, f"{handle.id}.args") is None

    # and its arguments are deleted (a succeeded task never runs again)
    await _eventually(args_deleted, "argument deletion")


async def test_dead_letter_arguments_expire_with_it_and_replay_keeps_them(
    jsflow_client: jsflow.Client,
) -> None:
    # given a failing task with large arguments and a 1 s retention
    app = App(jsflow_client, "t", artifact_threshold=1024, retention=1)
    calls: list[int] = []

    @app.task(name=uniq("failbig"), retries=0)
    async def failbig(blob: str) -> int:
        calls.append(len(blob))
        if len(calls) == 1:
            raise ValueError("first time fails")
        return len(blob)

    async with app.worker():
        handle = await failbig.submit("z" * 5000)
        with pytest.raises(jsflow.TaskFailedError):
            await handle.result(timeout=10)
        name = f"{handle.id}.args"

        async def args_expiring() -> bool:
            headers = await _artifact_headers(app, name)
            return headers is not None and headers.get("Nats-TTL") == "61s"

        # then the (replayable) arguments are kept, but expire with the dead letter
        await _eventually(args_expiring, "argument TTL")
        # when it is replayed, its arguments lose the TTL and the task runs again
        backend = await app.backend()
        assert await backend.replay(handle.id) is True
        headers = await _artifact_headers(app, name)
        assert headers is not None and "Nats-TTL" not in headers
        assert await handle.result(timeout=10) == 5000
    assert calls == [5000, 5000]


async def test_each_event_is_stored_once_in_the_task_stream(jsflow_client: jsflow.Client) -> None:
    # given a task that ran to completion
    app = App(jsflow_client, "t")
    name = uniq("once")

    @app.task(name=name)
    async def once() -> int:
        return 1

    async with app.worker():
        handle = await once.submit()
        await handle.result(timeout=10)
        kinds = [e.kind async for e in handle.events(idle_timeout=5)]
    # then its log replays requested, started, completed
    assert kinds == ["requested", "started", "completed"]
    # and every one of them is a single message on task.<kind>.<app>~<name>.<id>
    token = task_token(app.scope, name)
    info = await jsflow_client.js.stream_info(TASK_STREAM, subjects_filter=task_filter(handle.id))
    assert info.state.subjects == {
        f"task.requested.{token}.{handle.id}": 1,
        f"task.started.{token}.{handle.id}": 1,
        f"task.completed.{token}.{handle.id}": 1,
    }


async def test_a_state_changed_after_submit_still_starts_from_the_store(
    jsflow_client: jsflow.Client,
) -> None:
    # given a submitted task whose state changed after its request was published
    app = App(jsflow_client, "t")

    @app.task(name=uniq("changed"))
    async def changed() -> str:
        return "ran"

    handle = await changed.submit()
    backend = await app.backend()

    def touch(s: task_pb2.TaskState) -> None:
        s.worker = "someone-else"

    assert await backend.store.transition(handle.id, touch) is not None
    # when a worker takes the request (its carried revision is stale)
    async with app.worker():
        # then it falls back to the stored state and runs the task once
        assert await handle.result(timeout=10) == "ran"
    info = await handle.info()
    assert info.attempt == 1 and info.status is TaskStatus.SUCCEEDED


async def test_a_bare_request_from_another_producer_runs(jsflow_client: jsflow.Client) -> None:
    # given a request published by hand on task.requested.<app>~<name> (no state, bare
    # arguments)
    app = App(jsflow_client, "t")
    name = uniq("bare")

    @app.task(name=name)
    async def bare(x: int) -> int:
        return x * 3

    task_id = uuid.uuid4().hex
    payload = bare.codec.encode_args((7,), {})
    subject = request_subject(task_token(app.scope, name))
    await jsflow_client.js.publish(subject, payload, headers={H_TASK_ID: task_id})
    await app.backend()
    # then a worker creates its state and runs it
    async with app.worker():
        handle = bare.handle(task_id)

        async def present() -> bool:
            return await (await app.backend()).store.get(task_id) is not None

        await _eventually(present, "state creation")
        assert await handle.result(timeout=10) == 21
