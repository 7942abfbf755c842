"""The HTTP gateway against a real uvicorn and a real nats-server: commands, errors,
paging, cancel and replay, server-sent events that resume without loss, the firehose,
health, dead letters and the cost of followers."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import jsflow
from jsflow.flow.pipeline import FlowHandler
from jsflow.flow.source import StreamSource
from jsflow.tasks.app import App
from jsflow.tasks.context import current_task
from jsflow.tasks.status import TaskStatus
from jsflow.web import create_app
from jsflow.web.errors import status_for
from jsflow.web.routes import STATIC_DIR
from tests.support.web import eventually, serving, sse_events, stream_msgs, uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


def make_app(client: jsflow.Client) -> App:
    app = App(client, uniq("web"))

    @app.task(name="add", retries=0)
    async def add(x: int, y: int = 1) -> int:
        return x + y

    @app.task(name="fail", retries=0)
    async def fail(reason: str) -> None:
        raise RuntimeError(reason)

    @app.task(name="steps", retries=0)
    async def steps(n: int, pause: float = 0.02) -> int:
        for i in range(n):
            await current_task().progress(100 * (i + 1) / n, f"step {i + 1}")
            await asyncio.sleep(pause)
        return n

    return app


@contextlib.asynccontextmanager
async def gateway(client: jsflow.Client, app: App, **options):
    asgi = create_app(client, [app], **options)
    async with serving(asgi) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        yield http


async def submit(http: httpx.AsyncClient, name: str, **body) -> str:
    resp = await http.post(f"/tasks/{name}", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def wait_status(http: httpx.AsyncClient, task_id: str, status: str) -> dict:
    async with asyncio.timeout(10):
        while True:
            body = (await http.get(f"/tasks/{task_id}")).json()
            if body["status"] == status:
                return body
            await asyncio.sleep(0.05)


async def test_submit_answers_201_with_urls_and_the_task_runs_to_its_result(jsflow_client):
    # given a gateway over an app and a worker
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http, app.worker():
        # when a task is submitted with JSON arguments
        resp = await http.post("/tasks/add", json={"args": [2], "kwargs": {"y": 40}})
        # then it is accepted with its id and the URLs of its state and events
        assert resp.status_code == 201
        body = resp.json()
        task_id = body["id"]
        assert body["urls"]["self"] == f"/tasks/{task_id}"
        assert body["urls"]["events"] == f"/tasks/{task_id}/events"
        assert resp.headers["location"] == f"/tasks/{task_id}"
        # and its state shows the attempt, arguments and decoded result
        done = await wait_status(http, task_id, "SUCCEEDED")
        assert done["result"] == 42
        assert done["attempt"] == 1
        assert (done["args"], done["kwargs"]) == ([2], {"y": 40})
        assert done["error"] is None and done["terminal"] is True


async def test_submit_with_a_task_id_is_idempotent(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        first = await submit(http, "add", args=[1], task_id="order-17")
        again = await submit(http, "add", args=[1], task_id="order-17")
        assert first == again == "order-17"
        listed = (await http.get("/tasks")).json()
        assert [t["id"] for t in listed["tasks"]] == ["order-17"]


async def test_unknown_task_name_is_a_404_naming_it(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        resp = await http.post("/tasks/no_such_task", json={"args": []})
        assert resp.status_code == 404
        error = resp.json()["error"]
        assert error["type"] == "UnknownTaskError"
        assert "no_such_task" in error["message"] and "add" in error["message"]


async def test_arguments_that_do_not_fit_are_a_422_and_nothing_is_submitted(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        # missing argument, unexpected keyword, too many positionals
        for body, needle in (
            ({"args": []}, "x"),
            ({"args": [1], "kwargs": {"z": 3}}, "z"),
            ({"args": [1, 2, 3]}, "too many"),
        ):
            resp = await http.post("/tasks/add", json=body)
            assert resp.status_code == 422, body
            error = resp.json()["error"]
            assert error["type"] == "InvalidArgumentsError"
            assert needle in error["message"] and "add" in error["message"]
        # a malformed body or id is refused too, naming the field
        resp = await http.post("/tasks/add", content=b"{not json")
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "BadRequestError"
        resp = await http.post("/tasks/add", json={"args": 5})
        assert resp.status_code == 400 and "args" in resp.json()["error"]["message"]
        resp = await http.post("/tasks/add", json={"args": [1], "task_id": "bad id!"})
        assert resp.status_code == 422 and resp.json()["error"]["type"] == "InvalidNameError"
        resp = await http.post("/tasks/add", json={"args": [1], "depends_on": ["nope"]})
        assert resp.status_code == 422 and "nope" in resp.json()["error"]["message"]
        # and nothing was created by any of them
        assert (await http.get("/tasks")).json()["total"] == 0


async def test_unknown_task_id_and_route_are_404_json_errors(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        for method, path in (
            ("GET", "/tasks/missing-id"),
            ("POST", "/tasks/missing-id/cancel"),
            ("POST", "/tasks/missing-id/replay"),
            ("GET", "/tasks/missing-id/events"),
        ):
            resp = await http.request(method, path)
            assert resp.status_code == 404, path
            assert resp.json()["error"]["type"] == "TaskNotFoundError"
            assert "missing-id" in resp.json()["error"]["message"]
        resp = await http.get("/no/such/route")
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "NotFound"
        resp = await http.get("/tasks?limit=0")
        assert resp.status_code == 422 and "limit" in resp.json()["error"]["message"]
        resp = await http.get("/tasks?status=SLEEPING")
        assert resp.status_code == 422 and "SLEEPING" in resp.json()["error"]["message"]


async def test_listing_pages_newest_first_with_filters(jsflow_client):
    # given seven tasks of two names (no worker: they stay pending)
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        ids = [await submit(http, "add", args=[i]) for i in range(5)]
        ids += [await submit(http, "fail", args=["x"]) for _ in range(2)]
        # when paging three at a time
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/tasks", params=params)).json()
            assert page["total"] == 7
            seen += [t["id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        # then every task comes once, newest first
        assert seen == list(reversed(ids))
        # and filters narrow by name and status
        only = (await http.get("/tasks", params={"name": "fail"})).json()
        assert {t["id"] for t in only["tasks"]} == set(ids[5:])
        await http.post(f"/tasks/{ids[0]}/cancel")
        cancelled = (await http.get("/tasks", params={"status": "cancelled"})).json()
        assert [t["id"] for t in cancelled["tasks"]] == [ids[0]]
        assert (await http.get("/tasks", params={"cursor": "garbage"})).status_code == 400


async def test_task_store_snapshot_reads_every_current_value_in_one_pass(jsflow_client):
    # given a bucket with live, overwritten and deleted keys
    store = await jsflow_client.object_store(uniq("snap"), int, history=3)
    for i in range(20):
        await store.put(f"k{i}", i)
    await store.put("k3", 300)
    await store.delete("k5")
    await store.purge("k6")
    # when listing its entries
    entries = await store.entries()
    # then each live key comes once with its current value, deleted ones not at all
    values = {e.key: e.value for e in entries}
    assert len(entries) == len(values) == 18
    assert values["k3"] == 300 and "k5" not in values and "k6" not in values
    assert all(e.revision > 0 for e in entries)
    assert await (await jsflow_client.object_store(uniq("empty"), int)).entries() == []


async def test_cancel_and_replay(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        # a pending task is cancelled; cancelling again reports it had finished
        pending = await submit(http, "add", args=[1])
        resp = await http.post(f"/tasks/{pending}/cancel")
        assert resp.status_code == 200
        assert resp.json() == {"id": pending, "cancelled": True, "status": "CANCELLED"}
        assert (await http.post(f"/tasks/{pending}/cancel")).json()["cancelled"] is False
        # a task that is not a dead letter cannot be replayed
        resp = await http.post(f"/tasks/{pending}/replay")
        assert resp.status_code == 409 and resp.json()["error"]["type"] == "NotReplayableError"
        # a failed task is listed as a dead letter, and replayed runs again
        async with app.worker():
            failed = await submit(http, "fail", args=["boom"])
            body = await wait_status(http, failed, "FAILED")
            error = body["error"]
            assert (error["type"], error["message"]) == ("RuntimeError", "boom")
            assert error["traceback"] is None or "RuntimeError" in error["traceback"]
            dead = (await http.get("/dead-letters/tasks")).json()["tasks"]
            assert [t["id"] for t in dead] == [failed]
            resp = await http.post(f"/tasks/{failed}/replay")
            assert resp.status_code == 200 and resp.json()["replayed"] is True
            again = await wait_status(http, failed, "FAILED")
            assert again["replays"] == 1 and again["attempt"] == 1


async def read_events(
    http: httpx.AsyncClient, task_id: str, *, last_id: str | None = None, stop_after: int = 0
) -> list[dict]:
    """Events of one task's stream: all of them, or the first ``stop_after`` then cut."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    got: list[dict] = []
    async with http.stream("GET", f"/tasks/{task_id}/events", headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for sse in sse_events(resp):
            if sse.event != "message":
                continue
            body = sse.json()
            assert sse.id == str(body["seq"])
            got.append(body)
            if stop_after and len(got) == stop_after:
                break  # leaving the block drops the connection mid-stream
    return got


async def test_sse_resumes_after_last_event_id_without_loss_or_duplicate(jsflow_client):
    # given a running task that reports progress 30 times
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http, app.worker():
        task_id = await submit(http, "steps", args=[30], kwargs={"pause": 0.01})
        async with asyncio.timeout(20):
            # when a client reads 7 events, loses its connection, and reconnects with the
            # last id it saw (twice over)
            first = await read_events(http, task_id, stop_after=7)
            second = await read_events(http, task_id, last_id=str(first[-1]["seq"]), stop_after=9)
            rest = await read_events(http, task_id, last_id=str(second[-1]["seq"]))
            # then together they are the whole log: in order, none lost, none repeated
            full = await read_events(http, task_id)
        joined = first + second + rest
        seqs = [e["seq"] for e in joined]
        assert seqs == sorted(set(seqs))
        assert joined == full
        kinds = [e["kind"] for e in full]
        assert kinds[:2] == ["requested", "started"] and kinds[-1] == "completed"
        assert kinds.count("progress") == 30
        assert full[-1]["terminal"] is True
        # and a client resuming after the terminal event is told there is nothing more
        resp = await http.get(
            f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(full[-1]["seq"])}
        )
        assert resp.status_code == 204
        bad = await http.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "x1"})
        assert bad.status_code == 400


async def test_sse_sends_keepalive_comments_while_idle(jsflow_client):
    # given a pending task (no worker) and a short keep-alive
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app, keepalive=0.2) as http:
        task_id = await submit(http, "add", args=[1])
        async with asyncio.timeout(10), http.stream("GET", f"/tasks/{task_id}/events") as resp:
            # when nothing happens after its requested event
            kinds, comments = [], 0
            async for sse in sse_events(resp):
                if sse.event == "message":
                    kinds.append(sse.json()["kind"])
                comments += len(sse.comments)
                if comments >= 2:
                    break
        # then the stream stays open with comments, having sent the one event there is
        assert kinds == ["requested"]


async def test_firehose_streams_live_events_filtered_by_name(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http, app.worker():
        got: list[dict] = []

        async def follow() -> None:
            async with http.stream("GET", "/events", params={"name": "add"}) as resp:
                async for sse in sse_events(resp):
                    if sse.event == "ready":
                        ready.set()
                    elif sse.event == "message":
                        got.append(sse.json())
                        if sse.json()["kind"] == "completed":
                            return

        ready = asyncio.Event()
        async with asyncio.timeout(10):
            follower = asyncio.create_task(follow())
            await ready.wait()
            await submit(http, "fail", args=["not followed"])
            task_id = await submit(http, "add", args=[1])
            await follower
        assert {e["task_id"] for e in got} == {task_id}
        assert [e["kind"] for e in got] == ["requested", "started", "completed"]
        assert all(e["app"] == app.name for e in got)


async def test_healthz_and_readyz(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        # not ready while no worker bound the app's consumers: it names them
        resp = await http.get("/readyz")
        assert resp.status_code == 503
        checks = resp.json()["checks"]
        assert checks["server"]["ok"] and checks["jetstream"]["ok"]
        assert f"jsflow_task_{app.scope}~add" in checks["consumers"]["missing"]
        # ready once a worker bound them
        async with app.worker():
            resp = await http.get("/readyz")
            assert resp.status_code == 200 and resp.json()["ready"] is True
            queues = (await http.get("/queues")).json()["queues"]
            assert {q["name"] for q in queues if q["bound"]} == {"add", "fail", "steps"}
            metrics = (await http.get("/metrics")).text
            assert f'jsflow_task_queue_pending{{app="{app.name}",task="add"}} 0' in metrics


async def test_queues_show_pending_and_running_and_workers_what_they_run(jsflow_client):
    app = make_app(jsflow_client)
    gate = asyncio.Event()

    @app.task(name="hold", retries=0)
    async def hold() -> None:
        await gate.wait()

    async with gateway(jsflow_client, app) as http, app.worker(concurrency=1, tasks=["hold"]):
        ids = [await submit(http, "hold") for _ in range(3)]
        await wait_status(http, ids[0], "RUNNING")

        async def queue() -> dict:
            qs = (await http.get("/queues")).json()["queues"]
            return next(q for q in qs if q["name"] == "hold")

        async with asyncio.timeout(10):
            while (q := await queue())["running"] != 1 or q["pending"] != 2:
                await asyncio.sleep(0.05)
        workers = (await http.get("/workers")).json()["workers"]
        assert [(w["running"], w["tasks"]) for w in workers] == [(1, {"hold": 1})]
        gate.set()
        for task_id in ids:
            await wait_status(http, task_id, "SUCCEEDED")


async def consumer_counts(client: jsflow.Client) -> tuple[int, int]:
    """Consumers of the tasks stream, and of the whole account."""
    tasks = (await client.js.stream_info("JSFLOW_TASKS")).state.consumer_count
    return tasks, (await client.js.account_info()).consumers


async def test_200_sse_clients_add_no_consumers(jsflow_client):
    # given pending tasks and the consumers the server has before any follower
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as base_http:
        ids = [await submit(base_http, "add", args=[i]) for i in range(4)]
        before = await consumer_counts(jsflow_client)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=str(base_http.base_url), timeout=20, limits=limits
        ) as http:
            opened = asyncio.Queue()
            done: list[str] = []

            async def follow_task(task_id: str) -> None:
                async with http.stream("GET", f"/tasks/{task_id}/events") as resp:
                    async for sse in sse_events(resp):
                        if sse.event != "message":
                            continue
                        kind = sse.json()["kind"]
                        if kind == "requested":
                            await opened.put(1)
                        if kind == "completed":
                            done.append(task_id)
                # the stream ended by itself after the terminal event

            async def follow_all() -> None:
                async with http.stream("GET", "/events") as resp:
                    async for sse in sse_events(resp):
                        if sse.event == "ready":
                            await opened.put(1)
                        elif sse.event == "message" and sse.json()["kind"] == "completed":
                            done.append("firehose")
                            return

            async with asyncio.timeout(40):
                # when 200 clients follow (150 task streams, 50 firehose streams)
                tasks = [asyncio.create_task(follow_task(ids[i % 4])) for i in range(150)]
                tasks += [asyncio.create_task(follow_all()) for _ in range(50)]
                for _ in range(200):
                    await opened.get()
                # then the server has not one consumer more (account-wide, others' ephemeral
                # consumers may expire meanwhile: none was added)
                after = await consumer_counts(jsflow_client)
                assert after[0] == before[0] and after[1] <= before[1]
                # and every follower still gets the tasks' ends once a worker runs them
                async with app.worker():
                    await asyncio.gather(*tasks)
        assert len(done) == 200


async def _holds(client: jsflow.Client, stream: str, n: int) -> bool:
    return len(await stream_msgs(client, stream)) == n


async def test_flow_dead_letters_are_listed_inspected_and_replayed(jsflow_client):
    # given a flow whose stage always fails, dead-lettering after one delivery
    name = uniq("dlq")

    async def broken(msg):
        raise ValueError("cannot handle")

    flow = FlowHandler(
        jsflow_client,
        source=StreamSource(f"IN_{name}", f"in.{name}", f"d_{name}", int, fetch_timeout=0.25),
        stages=[broken],
        max_deliver=1,
        dead_letter=f"dl.{name}",
        dead_letter_stream=f"DL_{name}",
    )
    async with flow:
        await jsflow_client.js.publish(f"in.{name}", b"41", headers={"x-app": "a"})
        await eventually(lambda: _holds(jsflow_client, f"DL_{name}", 1))
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        # then the gateway finds the dead-letter stream by its messages
        streams = (await http.get("/dead-letters/flows")).json()["streams"]
        assert [s["stream"] for s in streams if s["stream"] == f"DL_{name}"] == [f"DL_{name}"]
        flows = (await http.get("/flows")).json()["streams"]
        source = next(s for s in flows if s["stream"] == f"IN_{name}")
        assert source["dead_letter"] is False and source["consumers"][0]["name"] == f"d_{name}"
        # lists it by sequence, with why it failed
        listed = (await http.get(f"/dead-letters/flows/DL_{name}")).json()["messages"]
        assert len(listed) == 1
        dead = listed[0]
        assert dead["original_subject"] == f"in.{name}"
        assert dead["error"] == {"type": "ValueError", "message": "cannot handle"}
        assert dead["body"]["data"] == "41"
        one = (await http.get(f"/dead-letters/flows/DL_{name}/{dead['seq']}")).json()
        assert one["headers"]["x-app"] == "a" and one["delivery"] == 1
        # and a replay republishes it to its original subject and removes it
        resp = await http.post(f"/dead-letters/flows/DL_{name}/{dead['seq']}/replay")
        assert resp.status_code == 200, resp.text
        assert resp.json()["subject"] == f"in.{name}" and resp.json()["deleted"] is True
        replayed = (await stream_msgs(jsflow_client, f"IN_{name}"))[-1]
        assert replayed.data == b"41" and replayed.headers["x-app"] == "a"
        assert "Jsflow-Error-Type" not in replayed.headers
        assert await _holds(jsflow_client, f"DL_{name}", 0)
        # a stream that holds no dead letters is not served as one
        resp = await http.get(f"/dead-letters/flows/IN_{name}")
        assert resp.status_code == 404
        resp = await http.get(f"/dead-letters/flows/DL_{name}/{dead['seq']}")
        assert resp.status_code == 404


async def test_monitor_page_and_assets_are_served_without_external_urls(jsflow_client):
    app = make_app(jsflow_client)
    async with gateway(jsflow_client, app) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<base href="/">' in page.text
        for asset in ("static/app.js", "static/style.css"):
            assert asset in page.text
            resp = await http.get(f"/{asset}")
            assert resp.status_code == 200
            assert "http://" not in resp.text and "https://" not in resp.text
        apps = (await http.get("/apps")).json()["apps"]
        assert [t["name"] for t in apps[0]["tasks"]] == ["add", "fail", "steps"]


async def test_gateway_mounted_under_a_prefix_starts_on_its_first_request(jsflow_server):
    # given a gateway from a URL, mounted in a parent app (whose lifespan does not run it)
    app = App(None, uniq("mounted"))

    @app.task(name="echo")
    async def echo(x: str) -> str:
        return x

    parent = Starlette(routes=[Mount("/ops", app=create_app(jsflow_server.url, [app]))])
    async with serving(parent) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        # then it connects on the first request, and its URLs carry the prefix
        resp = await http.post("/ops/tasks/echo", json={"args": ["hi"]})
        assert resp.status_code == 201, resp.text
        assert resp.json()["urls"]["self"].startswith("/ops/tasks/")
        page = await http.get("/ops/")
        assert '<base href="/ops/">' in page.text
        assert (await http.get(resp.json()["urls"]["self"])).json()["status"] == "PENDING"
        await app.client.close()


async def test_create_app_refuses_what_is_not_a_client_url_or_app():
    with pytest.raises(jsflow.ConfigError):
        create_app(42)  # type: ignore[arg-type]
    with pytest.raises(jsflow.ConfigError):
        create_app("nats://127.0.0.1:4222", ["not an app"])  # type: ignore[list-item]
    with pytest.raises(jsflow.ConfigError):
        create_app("nats://127.0.0.1:4222", keepalive=0)


async def test_a_task_status_value_is_what_the_monitor_shows(jsflow_client):
    # the page maps every event kind to a status: keep it in step with TaskStatus
    app_js = (await asyncio.to_thread(_read_app_js)).split("const KIND_STATUS = {")[1]
    mapping = app_js.split("};")[0]
    for status in TaskStatus:
        assert f'"{status.value}"' in mapping


def _read_app_js() -> str:
    return (STATIC_DIR / "app.js").read_text()


async def test_the_error_table_maps_every_family():
    assert status_for(jsflow.TaskNotFoundError("x")) == 404
    assert status_for(jsflow.ConfigError("x")) == 422
    assert status_for(jsflow.InvalidKeyError("a b", "space")) == 422
    assert status_for(jsflow.RequestTimeoutError("x")) == 504
    assert status_for(jsflow.JsflowError("x")) == 500
    assert status_for(RuntimeError("x")) == 500
