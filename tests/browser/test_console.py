"""The web console in a real browser (Debian's headless Chromium, driven by playwright-core
from tests/browser/console.mjs) against the real app on 127.0.0.1.

`make test` installs Chromium (apt) and playwright-core (npm ci, committed lock); no test
downloads a browser. Screenshots of every step: test-output/browser/<test>/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest

from tests.browser.conftest import APPROVAL_MODEL, ConsoleServer
from tests.support.fake_upstream import UpstreamScript
from tests.support.identity import PASSWORD, new_email

pytestmark = pytest.mark.timeout(120)


def _unexpected_console_errors(result: dict[str, Any], allowed: set[tuple[int, str]]) -> list[dict[str, str]]:
    """Console errors other than the failed requests this scenario causes on purpose."""
    unexpected = []
    for error in result["consoleErrors"]:
        match = re.match(r"Failed to load resource: the server responded with a status of (\d+)", error["text"])
        if match and (int(match.group(1)), urlparse(error["url"]).path) in allowed:
            continue
        unexpected.append(error)
    return unexpected


def test_console_page_and_assets_are_served_with_a_strict_csp(console_server: ConsoleServer) -> None:
    with httpx.Client(base_url=console_server.base_url, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "http" not in csp  # no remote origin allowed
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/console/app.js">' in page.text
        for asset, kind in (("app.js", "javascript"), ("api.js", "javascript"), ("app.css", "text/css")):
            response = http.get(f"/console/{asset}")
            assert response.status_code == 200, asset
            assert kind in response.headers["content-type"]
            assert response.headers["content-security-policy"] == csp
            assert "no-cache" in response.headers["cache-control"]
            # Nothing remote: no CDN, no external font, no inline handler attributes.
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.text), asset
        assert "onclick=" not in page.text
        # Unknown paths stay 404 in the contract's shape (the console does not swallow them).
        missing = http.get("/v1/no-such-thing")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


def test_admin_signs_in_manages_users_and_issues_a_key_used_by_the_openai_sdk(
    console_server: ConsoleServer, output_dir: Path
) -> None:
    seen = console_server.drive("admin", output_dir)

    assert "script-src 'self'" in seen["csp"]
    wrong = seen["wrongPasswordError"]
    assert "Invalid" in wrong or "incorrect" in wrong.lower(), wrong
    assert re.match(r"Rate limited: too many requests\. Try again in \d+ (s|min)\.$", seen["rateLimitError"])
    assert "root@example.com" in seen["whoAfterSignIn"]
    assert seen["adminNav"] == ["Chat", "Users", "API keys", "Usage"]
    assert seen["afterDeactivate"] == "deactivated"
    assert seen["afterMakeAdmin"] == "admin"
    # The secret: shown once, copyable, gone after "Done", never stored by the page.
    secret = seen["secret"]
    assert secret.startswith("sk-")
    assert seen["clipboard"] == secret
    assert "browser-key" in seen["keyRow"]
    assert console_server.user_email in seen["keyRow"]
    assert "demo" in seen["keyRow"]
    assert "60 rpm" in seen["keyRow"]
    assert secret not in seen["keyRow"]
    assert seen["secretGoneAfterDismiss"]
    assert not seen["secretInPageAfterReload"]
    assert not seen["secretInStorage"]
    assert seen["usageCompletionStatus"] == 200
    assert seen["usageChart"], "the usage page did not chart the completion just made"
    assert seen["refreshed"], "the console did not trade its refresh token for a new pair"
    assert seen["stillSignedInAfterRefresh"]
    assert seen["expiredSessionMessage"] == "Your session has expired or was ended. Please sign in again."

    # The key works with the official SDK against the same server, narrowed to its scope.
    client = openai.OpenAI(base_url=f"{console_server.base_url}/v1", api_key=secret, max_retries=0, timeout=10)
    answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello there"}])
    assert answer.choices[0].message.content
    assert "demo model" in answer.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model=APPROVAL_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "model_not_allowed"

    allowed = {
        (401, "/v1/auth/login"),  # wrong password, on purpose
        (429, "/v1/auth/login"),  # throttled, on purpose
        (401, "/v1/admin/users"),  # the session was ended elsewhere, on purpose
        (401, "/v1/auth/refresh"),  # ... so its refresh token is refused too
    }
    if seen["conversationsUnavailable"]:
        allowed.add((404, "/v1/conversations"))
    if seen["usageUnavailable"]:
        allowed.add((404, "/v1/usage"))
    assert _unexpected_console_errors(seen, allowed) == []
    assert len(seen["screenshots"]) >= 9


def test_phone_screen_api_key_sign_in_safe_markdown_and_sign_out(
    console_server: ConsoleServer, output_dir: Path
) -> None:
    headers = console_server.admin_headers()
    with httpx.Client(base_url=console_server.base_url, timeout=10) as http:
        issued = http.post("/v1/api-keys", json={"name": "phone"}, headers=headers)
        assert issued.status_code == 201, issued.text
    seen = console_server.drive("narrow", output_dir, CONSOLE_API_KEY=issued.json()["key"])

    assert "(API key)" in seen["narrowWho"]
    assert seen["narrowNav"] == ["Chat", "Users", "API keys", "Usage"]  # the key's user is the admin
    assert seen["narrowOverflow"] <= 0, "the page scrolls sideways on a phone"
    markdown = seen["markdown"]
    assert markdown["elements"] == ["P", "STRONG", "EM", "CODE", "PRE", "CODE", "UL", "LI", "A", "LI"]
    assert markdown["links"] == ["https://example.com/"]
    assert "<img src=x onerror=alert(1)>" in markdown["text"]
    assert "[bad](javascript:alert(1))" in markdown["text"]
    assert not markdown["alerted"]
    assert seen["sse"] == [
        ["run.started", {"run_id": "r"}, "1"],
        ["message.delta", {"delta": "é ✓"}, "2"],
        ["done", "[DONE]", "3"],
    ]
    assert seen["afterSignOut"] == "Signed out."
    assert seen["storageAfterSignOut"] == 0
    allowed = {(404, "/v1/conversations")} if "conversations-unavailable" in seen.get("chatState", "") else set()
    assert _unexpected_console_errors(seen, allowed) == []


def test_chat_streams_a_calculator_card_and_an_approval_survives_a_reload(
    console_server: ConsoleServer, output_dir: Path
) -> None:
    """The chat against the real conversations API: a calculator tool card, a streamed answer,
    an approval that survives a page reload, approved, and the run finishing."""
    # The approval model asks for http_get (which needs approval), then answers.
    # In order: the approval model asks for http_get, answers after approval; then a long, slow
    # answer that the Cancel button stops.
    fetch = UpstreamScript(words=[], tool_calls=[("http_get", '{"url": "https://example.com/"}')])
    console_server.upstream.reset(
        UpstreamScript(words=[f"story{i}" for i in range(60)], chunk_delay=0.2),
        fetch,
        UpstreamScript(words=["Fetched", "after", "approval."]),
        fetch,
        UpstreamScript(words=["Understood,", "not", "fetched."]),
    )
    seen = console_server.drive("chat", output_dir)

    assert "calculator" in seen["calculatorCard"]
    assert "success" in seen["calculatorCard"]
    assert re.search(r"\d+ ms", seen["calculatorCard"])
    assert "42" in seen["answer"]
    assert seen["shiftEnterValue"] == "first line\nsecond line"
    for text in (seen["approvalBeforeReload"], seen["approvalAfterReload"]):
        assert "http_get" in text
        assert "https://example.com/" in text
        # The run's own reason, also after a reload (GET /v1/conversations/{id} -> active_run).
        assert "the tool 'http_get' requires human approval" in text
    assert seen["reasonAfterReload"] == "the tool 'http_get' requires human approval"
    # A call waiting for a human is not "running"; after the decision it runs, then ends.
    assert seen["cardBeforeReload"] == "awaiting approval"
    assert seen["cardAfterReload"] == "awaiting approval"
    states = seen["approvedCardStates"]
    assert states[:2] == ["awaiting approval", "running"], states
    assert states[-1] in ("success", "error"), states  # example.com may be unreachable from here
    assert "Fetched after approval." in seen["afterApproval"]
    assert seen["secondCardBeforeDecision"] == "awaiting approval"
    assert seen["rejectedCardStates"][0] == "awaiting approval"
    assert "running" not in seen["rejectedCardStates"]
    assert seen["rejectedCardStates"][-1] == "rejected"
    assert "rejected" in seen["rejectedCard"]
    assert "not twice" in seen["rejectedCard"]
    # Cancel while the answer streams: the run ends cancelled, the partial answer stays shown.
    assert seen["cancelButtonShownWhileRunning"]
    assert seen["cancelledRunEnd"]
    assert "story0" in seen["partialAfterCancel"]
    assert "story59" not in seen["partialAfterCancel"]
    assert _unexpected_console_errors(seen, set()) == []


def test_conversation_list_pages_newest_first_and_renames_archives_and_deletes(
    console_server: ConsoleServer, output_dir: Path
) -> None:
    """More conversations than one page of the list (20), made through the API by a new user."""
    count = 25
    email = new_email()
    with httpx.Client(base_url=console_server.base_url, timeout=10) as http:
        registered = http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        ids = {}
        for n in range(1, count + 1):
            created = http.post("/v1/conversations", json={"title": f"Page {n:02d}", "model": "demo"}, headers=headers)
            assert created.status_code == 201, created.text
            ids[created.json()["title"]] = created.json()["id"]

    seen = console_server.drive(
        "conversations",
        output_dir,
        CONSOLE_LIST_EMAIL=email,
        CONSOLE_LIST_PASSWORD=PASSWORD,
        CONSOLE_LIST_COUNT=str(count),
    )

    newest_first = [f"Page {n:02d}" for n in range(count, 0, -1)]
    assert seen["firstPage"] == newest_first[:20]
    assert seen["moreShownOnFirstPage"]
    assert seen["allTitles"] == newest_first
    assert not seen["moreShownAfterLastPage"]
    assert seen["openedIsActiveInList"] == "Page 25"
    assert seen["listAfterRename"] == ["Renamed in the browser", *newest_first[1:20]]
    assert "Conversation archived." in seen["archiveNotice"]
    assert seen["activeAfterArchive"] == newest_first[1:21]
    assert seen["archivedList"] == ["Renamed in the browser"]
    assert seen["archiveButtonOfArchived"] == "Unarchive"
    assert "Conversation restored." in seen["restoreNotice"]
    assert seen["activeAfterRestore"] == ["Renamed in the browser", *newest_first[1:20]]
    assert seen["deleted"] == "Page 24"
    assert seen["deleteAsks"] == "Really delete?"
    assert "Page 24" in seen["listBeforeConfirm"]  # the first click only asks
    assert "Conversation deleted." in seen["deleteNotice"]
    assert seen["allAfterDelete"] == ["Renamed in the browser", *[t for t in newest_first[1:] if t != "Page 24"]]

    # The server agrees.
    with httpx.Client(base_url=console_server.base_url, timeout=10, headers=headers) as http:
        renamed = http.get(f"/v1/conversations/{ids['Page 25']}").json()
        assert renamed["title"] == "Renamed in the browser"
        assert renamed["archived"] is False
        assert http.get(f"/v1/conversations/{ids['Page 24']}").status_code == 404
        assert http.get("/v1/conversations", params={"status": "archived"}).json()["data"] == []
    assert _unexpected_console_errors(seen, set()) == []


def test_streamed_reasoning_is_shown_collapsed_and_opens_on_click(
    console_server: ConsoleServer, output_dir: Path
) -> None:
    # The fake upstream streams delta.reasoning_content, then the answer.
    thoughts = ["The", "user", "wants", "a", "short", "answer."]
    console_server.upstream.reset(UpstreamScript(reasoning=thoughts, words=["Here", "it", "is."]))
    seen = console_server.drive("reasoning", output_dir)

    sent = console_server.upstream.requests
    assert len(sent) == 1
    assert sent[0].body["stream"] is True
    assert seen["reasoningElements"] == 1
    assert seen["reasoningOpenAtFirst"] is False
    assert seen["reasoningTextVisibleAtFirst"] is False
    assert seen["reasoningSummary"] == "Reasoning"
    assert seen["reasoningText"] == " ".join(thoughts)
    assert seen["answerText"] == "Here it is."
    assert " ".join(thoughts) not in seen["answerText"]
    assert seen["reasoningOpenAfterClick"] is True
    assert seen["reasoningTextVisibleAfterClick"] is True
    assert seen["reasoningShownAfterClick"] == " ".join(thoughts)
    assert _unexpected_console_errors(seen, set()) == []
