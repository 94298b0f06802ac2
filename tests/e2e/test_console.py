"""The web console in Debian's Chromium, headless, against a real server through Envoy.

One ``cortex-core serve`` (the local provider paced at ``WORD_DELAY`` s a word, so a reply
visibly grows), the built console (console/dist, ``make console-build``) on a file server,
and Envoy from envoy/envoy.yaml routing gRPC-Web to the server and every other path to the
console: the page and the API share one origin, as with ``make console``. Playwright drives
/usr/bin/chromium (``make browser``); nothing is skipped when either is missing.

Screenshots go to build/console-screenshots/, or to the folder CONSOLE_SCREENSHOTS names
(``make console-screenshots`` refreshes docs/console/). The time from page load to the first
streamed token is printed, not asserted.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cortex.context.v1 import conversation_service_pb2 as conversation_pb
from cortex.context.v1 import conversation_service_pb2_grpc as conversation_grpc
from cortex.context.v1 import memory_pb2
from cortex.context.v1 import memory_service_pb2 as memory_pb
from cortex.context.v1 import memory_service_pb2_grpc as memory_grpc
from cortex.experts.v1 import tool_service_pb2 as tool_pb
from cortex.experts.v1 import tool_service_pb2_grpc as tool_grpc
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support.envoy import RunningEnvoy, running_envoy
from support.mcp import MODULE as MCP_MODULE
from support.servers import ServerProcess, cortex_server

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "console" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS", REPO / "build" / "console-screenshots"))
WORD_DELAY = "0.06"
# A sentence long enough that its reply (which quotes up to 40 of its words) takes seconds.
LONG_PROMPT = " ".join(f"word{i}" for i in range(40))
TIMEOUT_MS = 15_000


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """Print a measured figure past pytest's capture (it is reported, never asserted)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"console: {line}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("console-server")
    # The tests' MCP server, whose `echo` needs a person's approval inside a reply.
    mcp = data / "mcp.toml"
    mcp.write_text(
        "[servers.files]\n"
        f'command = "{sys.executable}"\n'
        f'args = ["-m", "{MCP_MODULE}"]\n'
        f'cwd = "{REPO}"\n'
        'require_approval = ["echo"]\n'
    )
    env = {
        "CORTEX_MCP_CONFIG": str(mcp),
        "CORTEX_LOCAL_LLM_DELAY": WORD_DELAY,
        # A short per-workspace log, so the tail can be shown a replay that is gone.
        "CORTEX_EVENTS_MAX_LENGTH": "30",
        "CORTEX_EVENTS_HEARTBEAT": "2",
    }
    with cortex_server(data, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def static_files(request: pytest.FixtureRequest) -> Iterator[str]:
    """console/dist over HTTP, as ``make console`` serves it (Python's http.server)."""
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} is not built; run 'make console-build'")
    files = [path for path in DIST.rglob("*") if path.is_file()]
    raw = sum(path.stat().st_size for path in files)
    packed = sum(len(gzip.compress(path.read_bytes(), 9)) for path in files)
    _report(
        request,
        f"bundle: {len(files)} files, {raw / 1024:.1f} KiB, {packed / 1024:.1f} KiB gzipped",
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=DIST))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def envoy(
    server: ServerProcess, static_files: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEnvoy]:
    with running_envoy(server.address, tmp_path_factory.mktemp("envoy"), static_files) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; run 'make browser' (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, envoy: RunningEnvoy) -> Iterator[Page]:
    context = browser.new_context(
        base_url=f"http://{envoy.listener}", viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _register(page: Page) -> str:
    email = f"console-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "correct horse battery staple 42")
    page.fill("input[name=display_name]", "Console User")
    page.click("[data-testid=signin-submit]")
    expect(page.get_by_test_id("current-user")).to_contain_text(email)
    return email


def _tokens(page: Page) -> dict[str, str]:
    raw = page.evaluate("localStorage.getItem('cortex.tokens')")
    assert raw, "the console keeps no tokens"
    tokens: dict[str, str] = json.loads(raw)
    return tokens


def _workspace(page: Page) -> str:
    # The console chooses a workspace once its list has loaded, a moment after sign-in.
    page.wait_for_function("localStorage.getItem('cortex.workspace') !== null")
    name = page.evaluate("localStorage.getItem('cortex.workspace')")
    assert isinstance(name, str)
    assert name.startswith("workspaces/")
    return name


def _open_conversation(page: Page, title: str) -> None:
    page.click("[data-testid=tab-conversations]")
    page.fill("[data-testid=new-conversation-title]", title)
    page.click("[data-testid=create-conversation]")
    expect(page.get_by_test_id("composer")).to_be_visible()


def _register_by_api(server: ServerProcess) -> str:
    email = f"member-{uuid.uuid4().hex[:10]}@example.com"
    with grpc.insecure_channel(server.address) as channel:
        auth_grpc.AuthServiceStub(channel).Register(
            auth_pb.RegisterRequest(
                email=email, password="correct horse battery staple 42", display_name="Member"
            ),
            timeout=30,
        )
    return email


def test_registration_shows_the_servers_field_violations_next_to_the_fields(
    page: Page, server: ServerProcess
) -> None:
    page.goto("/")
    page.fill("input[name=email]", "not-an-email")
    page.fill("input[name=password]", "short")
    page.click("[data-testid=signin-submit]")

    expect(page.get_by_test_id("violation-email")).to_contain_text("email")
    expect(page.get_by_test_id("violation-display_name")).to_be_visible()
    _shot(page, "register-violations")

    email = _register(page)
    expect(page.get_by_test_id("current-user")).to_contain_text(email)
    page.click("[data-testid=tab-workspaces]")
    members = page.get_by_test_id("members")
    expect(members).to_contain_text(email)
    expect(members).to_contain_text("OWNER")
    page.fill("[data-testid=new-workspace-name]", "Team")
    page.click("[data-testid=create-workspace]")
    expect(page.get_by_test_id("workspace-select")).to_contain_text("Team (OWNER)")
    other = _register_by_api(server)
    page.fill("[data-testid=member-email]", other)
    page.click("[data-testid=add-member]")
    expect(members).to_contain_text(other)
    expect(members.locator("tr", has_text=other)).to_contain_text("EDITOR")
    _shot(page, "workspaces")
    members.locator("tr", has_text=other).get_by_role("button", name="Remove").click()
    expect(members).not_to_contain_text(other)
    page.click("[data-testid=tab-sessions]")
    sessions = page.get_by_test_id("sessions")
    expect(sessions).to_contain_text("(this one)")
    _shot(page, "sessions")

    sessions.get_by_role("button", name="Revoke").click()
    expect(page.get_by_test_id("signin-form")).to_be_visible()

    page.get_by_role("button", name="Sign in").first.click()
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "not the password")
    page.click("[data-testid=signin-submit]")
    expect(page.get_by_test_id("error")).to_contain_text("INVALID_CREDENTIALS")
    page.fill("input[name=password]", "correct horse battery staple 42")
    page.click("[data-testid=signin-submit]")
    expect(page.get_by_test_id("current-user")).to_contain_text(email)


def test_a_reply_streams_into_the_page_and_ends_with_its_finish_reason_and_usage(
    page: Page, request: pytest.FixtureRequest
) -> None:
    _register(page)
    _open_conversation(page, "Streaming")

    # Page load to first streamed token: a fresh load of the conversation (its id is in the
    # URL), then Send. It includes one WORD_DELAY of the local provider before its first word.
    started = time.monotonic()
    page.reload()
    page.fill("[data-testid=composer]", LONG_PROMPT)
    page.click("[data-testid=send]")
    reply = page.get_by_test_id("streaming-reply")
    expect(reply).not_to_have_text("")
    first_token = time.monotonic() - started
    _report(
        request,
        f"page load to first streamed token: {first_token * 1000:.0f} ms "
        f"(of which the provider's first-word delay: {float(WORD_DELAY) * 1000:.0f} ms)",
    )

    lengths: list[int] = []
    while page.get_by_test_id("stop").is_visible():
        # No auto-wait: the streaming element goes away when the reply ends, possibly
        # between a visibility check and a read (text_content would wait 15 s for it).
        texts = reply.all_text_contents()
        text = texts[0] if texts else None
        if text is not None and (not lengths or len(text) > lengths[-1]):
            lengths.append(len(text))
        if len(lengths) == 4:
            _shot(page, "conversation-streaming")
        page.wait_for_timeout(60)
    assert len(lengths) >= 3, f"the reply did not grow in steps: {lengths}"

    expect(page.get_by_test_id("finish-reason")).to_have_text("STOP")
    expect(page.get_by_test_id("usage")).to_contain_text("completion tokens")
    expect(page.get_by_test_id("messages")).to_contain_text("[local-dev reply]")
    _shot(page, "conversation-finished")


def test_stop_cancels_the_reply_and_the_transcript_keeps_what_was_said(page: Page) -> None:
    _register(page)
    _open_conversation(page, "Stopping")
    page.fill("[data-testid=composer]", LONG_PROMPT)
    page.click("[data-testid=send]")
    reply = page.get_by_test_id("streaming-reply")
    expect(reply).to_contain_text("[local-dev reply]")

    page.click("[data-testid=stop]")

    expect(page.get_by_test_id("stream-error")).to_contain_text("Reply stopped")
    expect(page.get_by_test_id("send")).to_be_visible()
    expect(page.get_by_test_id("messages")).to_contain_text("finish CANCELLED")


def test_the_context_viewer_shows_every_candidate_against_the_budget(page: Page) -> None:
    _register(page)
    _open_conversation(page, "Context")
    for text in ("first question about budgets", "second question about windows"):
        page.fill("[data-testid=composer]", text)
        page.click("[data-testid=send]")
        expect(page.get_by_test_id("finish-reason")).to_have_text("STOP")

    page.click("[data-testid=toggle-context]")
    viewer = page.get_by_test_id("context-viewer")
    expect(viewer.get_by_test_id("context-summary")).to_contain_text("included items")
    page.fill("[data-testid=context-budget]", "40")
    page.click("[data-testid=context-apply]")

    expect(viewer.get_by_test_id("context-summary")).to_contain_text("of 40 tokens")
    items = viewer.get_by_test_id("context-items")
    expect(items).to_contain_text("INCLUDED")
    expect(items).to_contain_text("PRUNED")
    expect(viewer.get_by_test_id("budget-bar").locator(".segment.pruned").first).to_be_visible()
    _shot(page, "context-window")


def _event_ids(page: Page) -> list[str]:
    rows = page.get_by_test_id("event-row")
    return [rows.nth(i).get_attribute("data-event-id") or "" for i in range(rows.count())]


def test_the_event_tail_resumes_after_a_reload_without_a_gap_and_says_when_replay_is_gone(
    page: Page, envoy: RunningEnvoy, server: ServerProcess
) -> None:
    _register(page)
    workspace = _workspace(page)
    metadata = (("authorization", f"Bearer {_tokens(page)['accessToken']}"),)
    page.click("[data-testid=tab-events]")
    channel = grpc.insecure_channel(server.address)
    memories = memory_grpc.MemoryServiceStub(channel)
    conversations = conversation_grpc.ConversationServiceStub(channel)

    def remember(content: str) -> None:
        memories.CreateMemory(
            memory_pb.CreateMemoryRequest(
                parent=workspace,
                memory=memory_pb2.Memory(content=content, kind=memory_pb2.MEMORY_KIND_NOTE),
            ),
            metadata=metadata,
            timeout=10,
        )

    try:
        # Live: the tail has no token yet, so probe until one event arrives.
        for probe in range(50):
            remember(f"probe {probe}")
            if page.get_by_test_id("event-row").count() > 0:
                break
            page.wait_for_timeout(200)
        expect(page.get_by_test_id("tail-status")).to_have_text("live")
        before = _event_ids(page)

        # Away from the page: an event happens, then the page is loaded again.
        page.goto("about:blank")
        conversations.CreateConversation(
            conversation_pb.CreateConversationRequest(
                parent=workspace, conversation={"title": "created while the page was away"}
            ),
            metadata=metadata,
            timeout=10,
        )
        page.go_back()
        events = page.get_by_test_id("events")
        expect(events).to_contain_text("created while the page was away")
        after = _event_ids(page)
        assert set(before) <= set(after), "events shown before the reload are gone"
        assert len(after) == len(set(after)), f"an event is shown twice: {after}"

        # A reload right after an event: it shows once, whether it came before or after.
        remember("just before the reload")
        page.reload()
        expect(events).to_contain_text("just before the reload")
        remember("just after the reload")
        expect(events).to_contain_text("just after the reload")
        reloaded = _event_ids(page)
        assert set(after) <= set(reloaded)
        assert len(reloaded) == len(set(reloaded)), f"an event is shown twice: {reloaded}"
        _shot(page, "event-tail")

        # Away for longer than the workspace's log keeps: the tail says replay is gone.
        page.goto("about:blank")
        for index in range(40):
            remember(f"while away {index}")
        page.go_back()
        expect(page.get_by_test_id("replay-unavailable")).to_contain_text("Replay unavailable")
        expect(events).to_contain_text("while away 39")
    finally:
        channel.close()


def test_a_task_is_created_from_its_schema_form_watched_and_cancelled(page: Page) -> None:
    _register(page)
    page.click("[data-testid=tab-tasks]")
    page.select_option("[data-testid=expert-select]", "experts/echo")
    form = page.get_by_test_id("task-form")
    form.locator("textarea[name=text]").fill(" ".join(f"part{i}" for i in range(300)))
    form.locator("button[type=submit]").click()

    expect(page.get_by_test_id("task-state")).to_have_text("RUNNING")
    expect(page.get_by_test_id("task-output")).to_contain_text("[local-dev] part0 part1")
    _shot(page, "task-running")
    page.click("[data-testid=task-cancel]")

    expect(page.get_by_test_id("task-state")).to_have_text("CANCELLED")
    expect(page.get_by_test_id("task-list")).to_contain_text("CANCELLED")


def test_tools_memories_and_a_tool_call_inside_a_reply(page: Page) -> None:
    _register(page)
    page.click("[data-testid=tab-tools]")
    page.get_by_test_id("tool-list").get_by_text("tools/cortex.current_time").click()
    form = page.get_by_test_id("tool-form")
    form.locator("textarea[name=timezone]").fill("Europe/Paris")
    form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("tool-output")).to_contain_text('"timezone": "Europe/Paris"')
    _shot(page, "tools")

    page.click("[data-testid=tab-memories]")
    page.fill("[data-testid=memory-content]", "the console remembers blue teapots")
    page.fill("[data-testid=memory-ttl]", "3600")
    page.click("[data-testid=memory-create]")
    table = page.get_by_test_id("memories")
    expect(table).to_contain_text("blue teapots")
    expect(page.get_by_test_id("memory-expiry").first).not_to_have_text("never")
    page.fill("[data-testid=memory-query]", "teapots")
    page.click("[data-testid=memory-search]")
    expect(table).to_contain_text("score")
    _shot(page, "memories")
    table.get_by_role("button", name="Delete").click()
    expect(table).not_to_contain_text("blue teapots")

    page.click("[data-testid=tab-conversations]")
    page.fill("[data-testid=new-conversation-title]", "Tools")
    page.select_option("[data-testid=new-conversation-tools]", "tools/cortex.current_time")
    page.click("[data-testid=create-conversation]")
    page.fill("[data-testid=composer]", "/call cortex.current_time {}")
    page.click("[data-testid=send]")
    expect(page.get_by_test_id("finish-reason")).to_have_text("STOP")
    messages = page.get_by_test_id("messages")
    expect(messages.get_by_test_id("tool-call").first).to_contain_text("cortex.current_time")
    expect(messages.get_by_test_id("tool-result").first).to_contain_text("unix_seconds")


def test_a_tasks_input_request_is_answered_from_a_form_built_from_its_answer_schema(
    page: Page,
) -> None:
    _register(page)
    page.click("[data-testid=tab-tasks]")
    page.select_option("[data-testid=expert-select]", "experts/echo")
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
        "required": ["colour"],
    }
    form = page.get_by_test_id("task-form")
    form.locator("textarea[name=text]").fill(f"/ask {json.dumps(schema)}")
    form.locator("button[type=submit]").click()

    expect(page.get_by_test_id("task-state")).to_have_text("INPUT_REQUIRED")
    request = page.get_by_test_id("input-request")
    expect(request).to_contain_text("local-dev asks for input")
    _shot(page, "task-input-request")
    request.locator("select[name=colour]").select_option("blue")
    request.locator("button[type=submit]").click()

    expect(page.get_by_test_id("task-state")).to_have_text("SUCCEEDED")
    expect(page.get_by_test_id("task-watch")).to_contain_text("Thanks")


def _wait_for_tool(server: ServerProcess, page: Page, name: str) -> None:
    """MCP servers connect in the background: wait until ListTools offers the tool."""
    metadata = (("authorization", f"Bearer {_tokens(page)['accessToken']}"),)
    with grpc.insecure_channel(server.address) as channel:
        stub = tool_grpc.ToolServiceStub(channel)
        for _ in range(100):
            listed = stub.ListTools(tool_pb.ListToolsRequest(), metadata=metadata, timeout=10)
            if any(tool.name == name for tool in listed.tools):
                return
            time.sleep(0.2)
    pytest.fail(f"{name} never appeared:\n{server.logs()}")


def test_a_tool_call_that_needs_approval_is_approved_or_denied_from_the_transcript(
    page: Page, server: ServerProcess
) -> None:
    _register(page)
    _wait_for_tool(server, page, "tools/files.echo")
    page.reload()
    page.fill("[data-testid=new-conversation-title]", "Approvals")
    page.select_option("[data-testid=new-conversation-tools]", "tools/files.echo")
    page.click("[data-testid=create-conversation]")

    page.fill("[data-testid=composer]", '/call files.echo {"text": "approved words"}')
    page.click("[data-testid=send]")
    expect(page.get_by_test_id("finish-reason")).to_have_text("APPROVAL_REQUIRED")
    approvals = page.get_by_test_id("approvals")
    expect(approvals).to_contain_text("files.echo")
    _shot(page, "approval")
    approvals.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("finish-reason")).to_have_text("STOP")
    messages = page.get_by_test_id("messages")
    expect(messages.get_by_test_id("tool-result").first).to_contain_text("approved words")

    page.fill("[data-testid=composer]", '/call files.echo {"text": "denied words"}')
    page.click("[data-testid=send]")
    expect(page.get_by_test_id("approvals")).to_contain_text("denied words")
    page.get_by_test_id("approvals").get_by_role("button", name="Deny").click()
    expect(page.get_by_test_id("finish-reason")).to_have_text("STOP")
    expect(messages).to_contain_text("TOOL_DENIED")
