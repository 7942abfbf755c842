"""``TaskBackend``: one app's tasks on one client, what App, TaskHandle, EventRouter,
workers and the CLI share.

It binds the task stream and the app's state bucket and composes the concerns of the tasks
layer, each in its own module: :mod:`~jsflow.tasks.payloads` (inline or artifact payloads),
:mod:`~jsflow.tasks.requests` (the one submit path), :mod:`~jsflow.tasks.dag`
(dependencies) and :mod:`~jsflow.tasks.control` (cancel, replay); the state machine itself
is :mod:`~jsflow.tasks.lifecycle`.

Retention: the write that makes a task terminal carries a per-key TTL (``retention``), so
finished tasks leave the bucket on their own; their artifacts get the same lifetime.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from jsflow._js import js_errors, map_nats_errors
from jsflow._validate import count, duration
from jsflow.errors import BucketError
from jsflow.tasks.artifacts import ArtifactStore
from jsflow.tasks.control import Control
from jsflow.tasks.dag import Dependencies
from jsflow.tasks.payloads import DEFAULT_ARTIFACT_THRESHOLD, Payloads
from jsflow.tasks.requests import Requests
from jsflow.tasks.state import TaskStore
from jsflow.tasks.streams import (
    DEFAULT_APP,
    TASK_STREAM,
    ensure_streams,
    state_bucket,
    task_token,
)

if TYPE_CHECKING:
    from jsflow.client import Client

__all__ = ["DEFAULT_ARTIFACT_THRESHOLD", "DEFAULT_RETENTION", "TaskBackend", "check_retention"]

DEFAULT_RETENTION = 24 * 3600.0


def check_retention(retention: float | dt.timedelta | None) -> float | None:
    """Seconds of ``retention`` (a number or ``timedelta``; ``None``: keep forever), >= 1."""
    if retention is None:
        return None
    seconds = retention.total_seconds() if isinstance(retention, dt.timedelta) else retention
    return duration("retention", seconds, minimum=1.0, positive=False)


class TaskBackend:
    """Shared machinery of the tasks layer for one app on one client.

    ``retention`` (seconds, >= 1; ``None`` keeps finished tasks forever) is how long a task's
    state and artifacts stay after it finished. ``app`` scopes subjects, state and artifact
    names (:func:`task_token`, :func:`state_bucket`); the default app keeps the bare ones.
    """

    def __init__(
        self,
        client: Client,
        store: TaskStore,
        *,
        artifact_threshold: int = DEFAULT_ARTIFACT_THRESHOLD,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        app: str = DEFAULT_APP,
        replicas: int | None = None,
    ) -> None:
        count("artifact_threshold", artifact_threshold, minimum=1)
        self.app = app
        self.client = client
        self.store = store
        self.artifact_threshold = artifact_threshold
        self.retention = check_retention(retention)
        self.artifacts = ArtifactStore(client, replicas=replicas)
        self.payloads = Payloads(
            self.artifacts, threshold=artifact_threshold, retention=self.retention, app=app
        )
        self.requests = Requests(client, store, app)
        self.dag = Dependencies(
            client,
            store,
            app,
            retention=self.retention,
            requests=self.requests,
            payloads=self.payloads,
        )
        self.control = Control(self.dag)

    @classmethod
    async def open(
        cls,
        client: Client,
        *,
        artifact_threshold: int = DEFAULT_ARTIFACT_THRESHOLD,
        retention: float | dt.timedelta | None = DEFAULT_RETENTION,
        request_max_age: float | None = None,
        app: str = DEFAULT_APP,
        replicas: int | None = None,
        create: bool = True,
    ) -> TaskBackend:
        """Ensure the streams and the task-state bucket exist, and bind them.

        ``request_max_age`` (seconds): see :func:`ensure_streams` (``None``: what the task
        stream records, 7 days for a new one). ``replicas`` (default: the client's) applies
        to the task stream, the state bucket and the artifact bucket when created.
        ``create=False`` (read-only tools) binds only: :class:`BucketError` when the task
        stream or the app's state bucket does not exist, and nothing is created.
        """
        retention = check_retention(retention)
        if not create:
            for stream in (TASK_STREAM, f"KV_{state_bucket(app)}"):
                with map_nats_errors(subject=stream):
                    try:
                        await client.js.stream_info(stream)
                    except js_errors.NotFoundError:
                        raise BucketError(
                            f"no tasks of app {app!r} yet: {stream} does not exist"
                        ) from None
        await ensure_streams(client, max_age=request_max_age, replicas=replicas)
        store = await TaskStore.open(client, state_bucket(app), replicas=replicas)
        return cls(
            client,
            store,
            artifact_threshold=artifact_threshold,
            retention=retention,
            app=app,
            replicas=replicas,
        )

    def token(self, name: str) -> str:
        """The subject token of this backend's task ``name`` (see :func:`task_token`)."""
        return task_token(self.app, name)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task (see :meth:`jsflow.tasks.control.Control.cancel`)."""
        return await self.control.cancel(task_id)

    async def replay(self, task_id: str) -> bool:
        """Run a ``FAILED`` or ``DEAD`` task again (see :meth:`Control.replay`)."""
        return await self.control.replay(task_id)
