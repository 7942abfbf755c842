"""Retention: finished tasks, and their artifacts, expire after the app's retention (or are
kept with ``retention=None``); a dead letter's arguments expire with it until replayed."""

from __future__ import annotations

import base64
import json

import nats.js.errors
import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.errors import TaskNotFoundError
from jsflow.tasks.status import TaskStatus
from jsflow.tasks.streams import (
    ARTIFACT_BUCKET,
    DEFAULT_APP,
    state_bucket,
)
from tests.support.names import uniq
from tests.support.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


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

    # then the server removes the state on its own (polled: TTLs expire on a ~1 s tick)
    await eventually(gone, "state expiry")
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
    # polled: artifacts are settled just after the terminal write result() observes
    await eventually(args_deleted, "argument deletion")


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
        await eventually(args_expiring, "argument TTL")
        # when it is replayed, its arguments lose the TTL and the task runs again
        backend = await app.backend()
        assert await backend.replay(handle.id) is True
        headers = await _artifact_headers(app, name)
        assert headers is not None and "Nats-TTL" not in headers
        assert await handle.result(timeout=10) == 5000
    assert calls == [5000, 5000]
