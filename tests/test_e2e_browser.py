"""A real browser (Debian's Chromium, driven by Playwright) against the example app:
a page on another origin cannot open the app's socket; the app's own page, logged in,
gets a ticket and chats over the ``wsops`` subprotocol."""

import re

import pytest
from channels.db import database_sync_to_async

from tests.helpers import evil_page, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]




async def test_cross_site_page_is_refused_and_own_page_chats(daphne_server, make_user,
                                                             evil_site, chromium):
    executable, async_playwright = chromium
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    server = daphne_server(port=port, wsops={"ALLOWED_ORIGINS": [app]})
    await database_sync_to_async(make_user)("browser", perms=("chat.send_message",))
    pages, evil_origin = evil_site
    pages["/evil.html"] = evil_page(f"ws://127.0.0.1:{port}/ws/chat/lobby/")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{app}/accounts/login/")
        await page.fill("#id_username", "browser")
        await page.fill("#id_password", "pw")
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{app}/")
        await page.wait_for_function("document.getElementById('log').textContent"
                                     ".includes('connected (subprotocol wsops)')")
        await page.fill("#text", "hello from chromium")
        await page.click("#send button")
        await page.wait_for_function("document.getElementById('log').textContent"
                                     ".includes('browser: hello from chromium')")

        attacker = await context.new_page()  # same browser: the session cookie is there
        await attacker.goto(f"{evil_origin}/evil.html")
        assert await attacker.evaluate("window.result") == "refused"
        await browser.close()

    log = server.output()
    assert "origin refused: origin_not_allowed" in log
    assert re.search(f'origin="?{re.escape(evil_origin)}"?[ )]', log), log
