"""Artifacts: payloads too big to travel inline go to the object store and come back whole,
in chunks that fit even a small server; references are checked before any I/O."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import jsflow
from jsflow.tasks.app import App
from jsflow.tasks.artifacts import ArtifactStore
from tests.support.names import uniq

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_large_result_round_trips_through_the_object_store(
    jsflow_client: jsflow.Client,
) -> None:
    # given a task whose argument and result exceed the artifact threshold (>1 MiB result)
    app = App(jsflow_client, "t", artifact_threshold=64 * 1024)

    @app.task(name=uniq("big"))
    async def big(blob: str) -> str:
        return blob * 20

    arg = "x" * 100_000
    async with app.worker():
        handle = await big.submit(arg)
        result = await handle.result(timeout=20)
    # then the result is intact and the stored state only carries references
    assert result == arg * 20 and len(result) > 1024 * 1024
    backend = await app.backend()
    state = await backend.store.get(handle.id)
    assert state is not None
    assert state.result_ref and not state.result and state.args_ref and not state.args


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
