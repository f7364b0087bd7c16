"""The chat app and the console in a real browser (Debian's Chromium), against a live Levant
serving the real SmolLM2: sign in, stream, stop, reload, keys, usage, hostile output."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from levant.db.conversation_tables import Conversation, ConversationMessage
from levant.db.tables import Workspace
from tests.conftest import DEFAULT_MODEL, LiveServer
from tests.web.conftest import DESKTOP, PHONE, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = (
    '<img src=x onerror="window.__pwned=1;alert(1)">'
    "<script>window.__pwned=2;alert(2)</script>"
    " [click me](javascript:window.__pwned=3) "
    '<a href="javascript:window.__pwned=4">link</a>\n\n'
)


def running(server: LiveServer) -> int:
    """Requests the server's engine is generating right now."""
    return sum(s.engine.num_running for s in server.state.registry.generators())


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture(scope="module")
def context(browser: Any, web_server: LiveServer, credentials: dict[str, str]) -> Iterator[Any]:
    """A browser context signed in as the admin through the sign-in form."""
    ctx = browser.new_context(viewport=DESKTOP, base_url=web_server.url)
    page = ctx.new_page()
    page.goto("/")
    screenshot(page, "signin-desktop")
    page.fill("#email", credentials["email"])
    page.fill("#password", credentials["password"])
    page.click("#password-form button[type=submit]")
    page.wait_for_selector("#chat-view:not([hidden])")
    cookies = {c["name"]: c for c in ctx.cookies()}
    assert cookies["levant_session"]["httpOnly"] and cookies["levant_session"]["sameSite"] == "Lax"
    assert not cookies["levant_csrf"]["httpOnly"]
    page.close()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    p.close()
    assert not errors, errors


def reply(page: Any, action: Any) -> None:
    """Do ``action`` and wait until the reply it starts has finished (and been saved)."""
    done = int(page.evaluate("Number(document.body.dataset.replies || 0)"))
    action()
    page.wait_for_function(
        f"() => Number(document.body.dataset.replies || 0) > {done}",
        timeout=120_000,
        polling=100,  # a timer, not requestAnimationFrame: frames may not be scheduled
    )
    outcome = page.evaluate("document.body.dataset.lastReply")
    assert not outcome.startswith("error"), outcome  # a failed request fails here, at once
    page.wait_for_load_state("networkidle")


def set_settings(page: Any, *, max_tokens: int, temperature: str = "0.7") -> None:
    page.wait_for_selector("body[data-ready]")  # the Settings button is wired by then
    page.click("#open-settings")
    page.wait_for_selector("#settings-dialog[open]")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#system-prompt", "You are a storyteller.")
    page.eval_on_selector("#temperature", f"el => {{ el.value = '{temperature}'; }}")
    page.click("#save-settings")


def test_stream_stop_and_find_it_again(page: Any, web_server: LiveServer) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready]")
    assert "open weights" in page.text_content("#model-info")
    assert "region local" in page.text_content("#model-info")
    set_settings(page, max_tokens=400)
    # Record every length the reply's text goes through while it streams.
    page.evaluate(
        """() => {
        window.__lengths = [];
        new MutationObserver(() => {
          const m = document.querySelector('.message.assistant.streaming .message-body');
          if (m) window.__lengths.push(m.textContent.length);
        }).observe(document.querySelector('#messages'),
                   {childList: true, subtree: true, characterData: true});
    }"""
    )
    page.fill("#composer-input", "Tell me a long story about a lighthouse keeper and a storm.")
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.assistant.streaming")
    page.wait_for_function(
        "() => (document.querySelector('.message.assistant.streaming .message-body')"
        " || {textContent: ''}).textContent.length > 60",
        timeout=120_000,
    )
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 3, lengths  # tokens arrived in several steps
    assert running(web_server) == 1
    screenshot(page, "chat-streaming-desktop")

    page.click("#stop")
    page.wait_for_selector(".message.assistant:not(.streaming)")
    assert page.is_visible("#send") and not page.is_visible("#stop")
    assert wait_until(lambda: running(web_server) == 0), "generation kept running after stop"
    stopped = page.text_content(".message.assistant .message-body")
    page.wait_for_timeout(700)
    assert page.text_content(".message.assistant .message-body") == stopped
    assert "stopped" in page.text_content(".message.assistant .message-actions")

    # Stored: one row per message, the partial reply included.
    title = page.text_content("#conversation-title")
    page.wait_for_function("() => document.querySelectorAll('.conversation-item').length > 0")
    with web_server.state.platform.db.reading() as s:
        conv = s.scalars(select(Conversation).where(Conversation.name == title)).one()
        rows = s.scalars(
            select(ConversationMessage).where(ConversationMessage.conversation_id == conv.id)
        ).all()
    assert [r.role for r in rows] == ["user", "assistant"]
    assert rows[1].finish_reason == "cancelled" and rows[1].content.strip()
    assert conv.max_tokens == 400 and conv.instructions == "You are a storyteller."

    page.reload()
    page.wait_for_selector(".message.assistant")
    assert page.text_content("#conversation-title") == title
    page.goto("/")  # a fresh chat; the conversation is in the list, newest first
    page.wait_for_selector(".conversation-item")
    first = page.locator(".conversation-item").first
    assert first.locator(".conversation-name").text_content() == title
    page.fill("#search", "lighthouse")
    page.wait_for_timeout(400)
    assert page.locator(".conversation-item").count() == 1
    page.fill("#search", "no-such-words-anywhere")
    page.wait_for_selector("text=No conversation matches.")
    page.fill("#search", "")
    page.wait_for_selector(".conversation-item")
    page.locator(".conversation-item").first.click()
    page.wait_for_selector(".message.user")
    assert "lighthouse keeper" in page.text_content(".message.user")
    assert page.text_content(".message.assistant .message-body") == stopped
    screenshot(page, "chat-desktop")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    screenshot(page, "chat-phone")
    page.click("#toggle-sidebar")
    page.wait_for_selector("#sidebar .conversation-item >> visible=true")
    screenshot(page, "chat-phone-conversations")
    page.keyboard.press("Escape")
    page.set_viewport_size(DESKTOP)


def test_regenerate_edit_rename_export_delete(page: Any, web_server: LiveServer) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready]")
    set_settings(page, max_tokens=8)
    page.fill("#composer-input", "Say hello.")
    reply(page, lambda: page.click("#send"))
    reply(page, lambda: page.click("text=Regenerate"))
    assert page.locator(".message.assistant").count() == 1
    page.click(".message.user >> text=Edit")
    page.fill(".edit-area", "Say goodbye.")
    reply(page, lambda: page.click("text=Save & send"))
    assert page.text_content(".message.user .message-body") == "Say goodbye."
    assert page.locator(".message").count() == 2

    page.click("#rename")
    page.fill("#rename-input", "Renamed chat")
    page.click("#rename-dialog button[value=save]")
    page.wait_for_selector(".conversation-item >> text=Renamed chat")
    with page.expect_download() as info:
        page.click("#export-md")
    markdown = Path(info.value.path()).read_text()
    assert markdown.startswith("# Renamed chat") and "## User\n\nSay goodbye." in markdown
    with page.expect_download() as info:
        page.click("#export-json")
    assert '"name": "Renamed chat"' in Path(info.value.path()).read_text()

    page.click("#delete")
    page.click("#delete-dialog button[value=delete]")
    page.wait_for_selector(".conversation-item >> text=Renamed chat", state="detached")
    assert page.text_content("#conversation-title") == "New chat"


def test_hostile_output_never_executes(browser: Any, web_server: LiveServer, context: Any) -> None:
    # Without the CSP: the renderer alone must keep the markup inert.
    ctx = browser.new_context(
        viewport=DESKTOP,
        base_url=web_server.url,
        bypass_csp=True,
        storage_state=context.storage_state(),
    )
    page = ctx.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    def force_prefix(route: Any) -> None:
        # The real model continues an assistant prefix; the API streams the prefix first.
        body = route.request.post_data_json
        body["messages"].append({"role": "assistant", "content": HOSTILE, "prefix": True})
        body["max_tokens"] = 12
        body["temperature"] = 0  # the same short continuation on every run
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", force_prefix)
    page.goto("/")
    page.wait_for_selector("body[data-ready]")
    page.fill(
        "#composer-input",
        'Hostile input: <img src=x onerror="window.__pwned=5"> <script>window.__pwned=6</script>',
    )
    reply(page, lambda: page.click("#send"))

    def assert_inert() -> None:
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("#messages img, #messages script, #messages iframe").count() == 0
        assert page.locator('#messages a[href^="javascript:"]').count() == 0
        assert page.locator("#messages [onerror]").count() == 0
        reply = page.text_content(".message.assistant .message-body")
        assert '<img src=x onerror="window.__pwned=1;alert(1)">' in reply
        assert "<script>window.__pwned=2;alert(2)</script>" in reply
        assert '<img src=x onerror="window.__pwned=5">' in page.text_content(".message.user")
        assert dialogs == []

    page.wait_for_timeout(500)  # give any injected handler the chance to fire
    assert_inert()
    screenshot(page, "chat-hostile-desktop")
    page.reload()  # the stored copy renders the same way
    page.wait_for_selector(".message.assistant")
    page.wait_for_timeout(500)
    assert_inert()
    ctx.close()


def test_console_keys_and_usage_chart(page: Any, web_server: LiveServer) -> None:
    page.goto("/console")
    page.wait_for_selector("body[data-ready]")
    page.wait_for_selector("#usage-chart svg")
    before = int(page.get_attribute("#usage-chart", "data-total-tokens") or 0)
    assert before > 0  # the chats above were metered
    assert page.locator("#catalogue-table tbody tr").count() == 1
    assert "Apache-2.0" in page.text_content("#catalogue-table")
    assert (
        page.locator(f'#catalogue-table a[href="/v1/models/{DEFAULT_MODEL}/weights"]').count() == 1
    )
    assert "No limits configured" in page.text_content("#policy-body")
    assert "admin" in (page.text_content("#members-table tbody") or "")

    page.fill("#key-name", "e2e-key")
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#new-key-value")
    key = page.text_content("#new-key-value")
    assert key and key.startswith("lv-")
    row = page.locator("#keys-table tbody tr", has_text="e2e-key")
    assert row.locator("code").text_content() == key[:11] + "…"
    assert "never" in row.text_content()

    chat = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 10,
    }
    headers = {"authorization": f"Bearer {key}"}
    r = httpx.post(f"{web_server.url}/v1/chat/completions", json=chat, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    spent = r.json()["usage"]["total_tokens"]
    page.click("#usage-refresh")
    total = "Number(document.querySelector('#usage-chart').dataset.totalTokens)"
    page.wait_for_function(f"() => {total} === {before + spent}")
    assert page.locator("#usage-chart rect.bar").count() >= 1
    with page.expect_download() as info:
        page.click("#usage-csv")
    assert Path(info.value.path()).read_text().startswith("day,model,requests")
    page.locator("#usage").scroll_into_view_if_needed()
    screenshot(page, "console-usage-desktop")
    page.goto("/console")
    page.wait_for_selector("#usage-chart svg")
    screenshot(page, "console-desktop")

    row = page.locator("#keys-table tbody tr", has_text="e2e-key")
    row.locator("button", has_text="Revoke").click()
    page.click("#revoke-dialog button[value=revoke]")
    page.wait_for_selector("#keys-table tbody tr:has-text('e2e-key') .status-revoked")
    r = httpx.post(f"{web_server.url}/v1/chat/completions", json=chat, headers=headers, timeout=60)
    assert r.status_code == 401 and r.json()["code"] == "revoked_api_key"

    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "console-phone")


def test_keyboard_labels_focus_and_dark_theme(page: Any) -> None:
    page.goto("/")
    page.wait_for_selector("body[data-ready]")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
          .filter(el => el.offsetParent !== null)
          .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                        && !el.textContent.trim())
          .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    first = "document.querySelector('a[href], button, input, select, textarea').className"
    assert page.evaluate(first) == "skip-link"  # the first stop: straight to the message box
    assert page.evaluate("document.activeElement.id") == "composer-input"
    page.keyboard.press("Tab")  # to Send, by keyboard: focus must show
    assert page.evaluate("document.activeElement.id") == "send"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    screenshot(page, "chat-dark-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "chat-dark-phone")
    page.click("#theme-toggle")
    page.set_viewport_size(DESKTOP)


def test_zero_retention_stores_nothing_and_says_so(page: Any, web_server: LiveServer) -> None:
    db = web_server.state.platform.db
    workspace = web_server.state.platform.bootstrap.workspace_id

    def set_retention(value: str) -> None:
        with db.writing() as s:
            s.execute(update(Workspace).where(Workspace.id == workspace).values(retention=value))

    def stored() -> int:
        with db.reading() as s:
            return int(s.scalar(select(func.count()).select_from(ConversationMessage)) or 0)

    set_retention("zero")
    try:
        before = stored()
        page.goto("/")
        page.wait_for_selector("#retention-banner:not([hidden])")
        assert "nothing you send here is stored" in page.text_content("#retention-banner")
        set_settings(page, max_tokens=6)
        page.fill("#composer-input", "Remember nothing.")
        reply(page, lambda: page.click("#send"))
        assert page.locator(".message").count() == 2
        assert page.locator(".conversation-item").count() == 0
        assert stored() == before
        screenshot(page, "chat-zero-retention-desktop")
    finally:
        set_retention("standard")
