"""The monitor page in a real headless Chromium (Debian's ``chromium``, driven by
Playwright through its executable path: nothing is downloaded)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from jsflow.tasks.app import App
from jsflow.web import create_app
from tests.support.web import serving, uniq

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # the dev extra brings it; without it the test says why it skips
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; "
        "python3 dev.py test installs it when run as root)",
    ),
    pytest.mark.skipif(
        async_playwright is None,
        reason="needs the playwright package (pip install -e '.[dev]'); its own browser "
        "downloads are never used",
    ),
]


async def test_monitor_shows_a_task_go_from_pending_to_succeeded_without_reload(
    jsflow_client, tmp_path
):
    # given the monitor open in a browser, on a gateway whose app has no worker yet
    app = App(jsflow_client, uniq("browser"))

    @app.task(name="greet", retries=0)
    async def greet(who: str) -> str:
        await asyncio.sleep(0.2)
        return f"hello {who}"

    asgi = create_app(jsflow_client, [app])
    async with (
        asyncio.timeout(45),
        serving(asgi) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/")
            await expect(page.locator("#live")).to_have_class("live on", timeout=10_000)
            await page.evaluate("window.__sameDocument = true")
            # when a task is submitted through the API
            resp = await http.post("/tasks/greet", json={"args": ["web"]})
            assert resp.status_code == 201
            task_id = resp.json()["id"]
            row = page.locator(f'#tasks tbody tr[data-task-id="{task_id}"]')
            status = row.locator("td.status")
            # then it appears as pending, live
            await expect(status).to_have_text("PENDING", timeout=10_000)
            # and, once a worker runs it, turns succeeded on the same page
            async with app.worker():
                await expect(status).to_have_text("SUCCEEDED", timeout=10_000)
            assert await page.evaluate("window.__sameDocument") is True
            # and its timeline shows the events and the result
            await row.click()
            await expect(page.locator("#d-status")).to_have_text("SUCCEEDED", timeout=10_000)
            await expect(page.locator("#d-events")).to_contain_text("completed", timeout=10_000)
            await expect(page.locator("#d-result")).to_contain_text("hello web")
            await page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)
        finally:
            await browser.close()
