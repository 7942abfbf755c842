"""Task event followers cost the server nothing per follower; payloads fit small servers;
ids and options are checked before any I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import jsflow
from jsflow.tasks import events as events_module
from jsflow.tasks.app import App
from jsflow.tasks.artifacts import ArtifactStore
from jsflow.tasks.context import current_task
from jsflow.tasks.events import TaskEvents
from jsflow.tasks.streams import TASK_STREAM

pytestmark = pytest.mark.asyncio(loop_scope="session")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def own_client() -> AsyncIterator[jsflow.Client]:
    """A client on a server of its own: no other test's consumers come and go on it."""
    async with jsflow.EmbeddedServer() as server:
        client = await jsflow.connect(server.url)
        async with client:
            yield client


async def _consumers(client: jsflow.Client) -> int:
    info = await client.js.stream_info(TASK_STREAM)
    return int(info.state.consumer_count)


async def test_1200_followers_cost_no_consumers_and_each_sees_its_events_once_in_order(
    own_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(90):
        # given 400 pending tasks and three followers of each (1,200 in all)
        app = App(own_client, "t")

        @app.task(name=uniq("echo"))
        async def echo(i: int) -> int:
            return i

        handles = await asyncio.gather(*(echo.submit(i) for i in range(400)))
        before = await _consumers(own_client)
        followers = [h.events(idle_timeout=60) for h in handles for _ in range(3)]
        firsts = await asyncio.gather(*(anext(f) for f in followers))
        assert {e.kind for e in firsts} == {"requested"}
        # when they all follow at once, then the stream has no more consumers than before
        assert await _consumers(own_client) == before

        async def rest(f: TaskEvents) -> list[str]:
            kinds = ["requested"]
            async for e in f:
                assert e.task_id == f.task_id
                kinds.append(e.kind)
            return kinds

        collecting = asyncio.gather(*(rest(f) for f in followers))
        # and a worker started while they follow runs the tasks (no consumer was used up)
        async with app.worker(concurrency=64):
            seen = await collecting
        # and each got its task's events in order, exactly once
        assert all(kinds == ["requested", "started", "completed"] for kinds in seen)


@pytest.mark.parametrize("direct", [False, True], ids=["stream-get", "direct-get"])
async def test_a_follower_joining_mid_run_gets_replay_then_live_without_gap_or_repeat(
    own_client: jsflow.Client, direct: bool
) -> None:
    async with asyncio.timeout(30):
        # given a task that reports progress, then waits, then reports more
        app = App(own_client, "t")
        # a tasks stream that serves direct gets (as jsflow creates it), or one that does not
        # (an operator's), where followers fall back to stream message gets
        await App(own_client, "setup").backend()
        info = await own_client.js.stream_info(TASK_STREAM)
        if info.config.allow_direct != direct:
            info.config.allow_direct = direct
            await own_client.js.update_stream(info.config)
        halfway = asyncio.Event()
        go_on = asyncio.Event()

        @app.task(name=uniq("prog"))
        async def prog() -> None:
            for p in range(1, 4):
                await current_task().progress(p)
            halfway.set()
            await go_on.wait()
            for p in range(4, 7):
                await current_task().progress(p)

        async with app.worker():
            handle = await prog.submit()
            await halfway.wait()
            # when a follower starts after half of the events were stored
            follower = handle.events(idle_timeout=10)
            first = [await anext(follower) for _ in range(5)]
            assert events_module._hub_for(own_client).direct is direct
            go_on.set()
            later = [e async for e in follower]
        events = first + later
        # then it sees every event once, in order, across the replay/live seam
        assert [e.kind for e in events] == ["requested", "started"] + ["progress"] * 6 + [
            "completed"
        ]
        assert [e.progress for e in events if e.kind == "progress"] == [1, 2, 3, 4, 5, 6]


async def test_a_duplicate_publish_the_stream_dropped_is_not_shown_to_followers(
    own_client: jsflow.Client,
) -> None:
    async with asyncio.timeout(20):
        # given a follower of a pending task
        app = App(own_client, "t")

        @app.task(name=uniq("dup"))
        async def dup() -> int:
            return 1

        task_id = uuid.uuid4().hex
        handle = await dup.submit_with(task_id=task_id)
        follower = handle.events(idle_timeout=10)
        assert (await anext(follower)).kind == "requested"
        # when it is resubmitted (its request published again, dropped by the stream as a
        # duplicate, though core subscribers see it) and then runs
        await dup.submit_with(task_id=task_id)
        async with app.worker():
            rest = [e.kind async for e in follower]
        # then the follower saw each stored event once
        assert rest == ["started", "completed"]


async def test_aclose_releases_a_follower_at_once(own_client: jsflow.Client) -> None:
    async with asyncio.timeout(15):
        # given a follower of a pending task that has read its first event
        app = App(own_client, "t")

        @app.task(name=uniq("idle"))
        async def idle() -> None:
            return None

        handle = await idle.submit()
        follower = handle.events(idle_timeout=10)
        assert (await anext(follower)).kind == "requested"
        hub = events_module._hub_for(own_client)
        assert handle.id in hub._followers
        # when it is closed, then its registration is gone and it ends
        await follower.aclose()
        assert handle.id not in hub._followers
        with pytest.raises(StopAsyncIteration):
            await anext(follower)


async def test_closing_the_client_ends_its_followers_with_connection_closed(
    jsflow_server: jsflow.EmbeddedServer,
) -> None:
    async with asyncio.timeout(15):
        # given a follower waiting for the next event of a pending task
        client = await jsflow.connect(jsflow_server.url)
        app = App(client, "t")

        @app.task(name=uniq("never"))
        async def never() -> None:
            return None

        handle = await never.submit()
        follower = handle.events()
        assert (await anext(follower)).kind == "requested"
        waiting = asyncio.ensure_future(anext(follower))
        await asyncio.sleep(0.05)
        # when the client closes, then the follower ends with a typed error
        await client.close()
        with pytest.raises(jsflow.ConnectionClosedError):
            await waiting


def _small_server(tmp_path: Path) -> jsflow.EmbeddedServer:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 2048\n")  # nats-server has no flag for it: a config file
    return jsflow.EmbeddedServer(args=["-c", str(conf)])


async def test_a_3kb_artifact_fits_a_2kb_server_in_chunks(tmp_path: Path) -> None:
    async with asyncio.timeout(30), _small_server(tmp_path) as server:
        client = await jsflow.connect(server.url)
        async with client:
            # given a 2 KB server, the inline limit leaves a task state room to fit
            store = ArtifactStore(client)
            assert store.inline_limit(256 * 1024) < 1024
            # when 3 KB go to the object store (with a TTL header on every chunk)
            data = bytes(range(256)) * 12
            ref = await store.put("big.args", data, ttl=60)
            # then they come back whole
            assert await store.get(ref) == data


async def test_a_3kb_argument_and_result_go_to_the_object_store_on_a_2kb_server(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), _small_server(tmp_path) as server:
        client = await jsflow.connect(server.url)
        async with client:
            assert client.nc.max_payload == 2048
            # given a task whose argument and result are 3 KB each on a 2 KB server
            app = App(client, "t")

            @app.task(name=uniq("big"))
            async def big(text: str) -> str:
                return text.upper()

            async with app.worker():
                handle = await big.submit("x" * 3000)
                # then it succeeds, both payloads travelling as artifacts
                assert await handle.result(timeout=15) == "X" * 3000
            state = await handle.info()
            assert state is not None


async def test_the_inline_limit_is_capped_by_the_servers_max_payload(
    jsflow_client: jsflow.Client,
) -> None:
    store = ArtifactStore(jsflow_client)
    max_payload = jsflow_client.nc.max_payload
    assert store.inline_limit(10**12) < max_payload
    assert store.inline_limit(100) == 100


@pytest.mark.parametrize("ref", ["obj:bad name", "obj:" + "a" * 5000, "obj:", "plain", "obj:a..b"])
async def test_an_illegal_artifact_reference_is_a_codec_error_before_any_io(
    jsflow_client: jsflow.Client, ref: str
) -> None:
    store = ArtifactStore(jsflow_client)
    with pytest.raises(jsflow.CodecError):
        await store.get(ref)
    await store.delete(ref)  # nothing to delete: no error
    assert store._store is None  # nothing was opened


async def test_wrong_typed_options_and_ids_are_config_errors_naming_them(
    jsflow_client: jsflow.Client,
) -> None:
    app = App(jsflow_client, "t")

    @app.task(name=uniq("opt"))
    async def opt() -> None:
        return None

    handle = await opt.submit()
    with pytest.raises(jsflow.ConfigError, match="idle_timeout"):
        handle.events(idle_timeout="5")  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError, match="timeout"):
        await handle.result(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError, match="task id"):
        opt.handle("no spaces allowed")
    with pytest.raises(jsflow.ConfigError, match="task id"):
        TaskEvents(jsflow_client, "x" * 5000)
