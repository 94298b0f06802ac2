"""Local HTTP servers that speak the OpenAI and Anthropic streaming wire formats.

A small asyncio HTTP/1.1 server (keep-alive, chunked server-sent events) so the real
``openai`` and ``anthropic`` SDKs can be pointed at ``127.0.0.1``. Each request is
answered by the next queued :class:`Script` (or ``default``), and recorded with what
the client sent and whether, and when, the client closed the connection mid-reply.

A script streams text, then tool calls (:class:`ScriptedCall`) whose argument JSON is
split into the fragments given, framed as each API frames them: OpenAI
``delta.tool_calls`` entries by ``index`` (id, type and name in a call's first entry,
``finish_reason: "tool_calls"``); Anthropic ``content_block_start`` of a ``tool_use``
block, ``input_json_delta`` deltas, ``content_block_stop`` and ``stop_reason:
"tool_use"``. The servers refuse (HTTP 400, in the API's error format) a request whose
tool history breaks the rule the real API enforces, so a wrong shape cannot pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self


@dataclasses.dataclass(frozen=True)
class ScriptedCall:
    """One tool call a script streams: ``arguments`` are the JSON text's fragments."""

    name: str
    arguments: Sequence[str] = ("{}",)
    id: str = ""  # empty: the server makes one up (``call_…``, ``toolu_…``)


@dataclasses.dataclass(frozen=True)
class Script:
    """What the fake server does for one request.

    The reply is a sequence of pieces: each text token, each tool call's start and
    each of its argument fragments. ``cut_after``, ``hang_after`` and ``error_after``
    count pieces; ``interval`` paces them."""

    tokens: Sequence[str] = ("Hello", ",", " world")
    tool_calls: Sequence[ScriptedCall] = ()
    status: int = 200  # anything else: an error body in the provider's format
    # "auto": the API's own stop (OpenAI ``stop``/``tool_calls``, Anthropic
    # ``end_turn``/``tool_use``); None: the stream ends without a finish reason.
    finish: str | None = "auto"
    usage: tuple[int, int] | None = (11, 3)  # (prompt, completion) or not reported
    interval: float = 0.0  # seconds between pieces
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    headers_delay: float = 0.0  # seconds before the response starts
    cut_after: int | None = None  # drop the connection after this many pieces
    hang_after: int | None = None  # stop sending (connection kept open) after this many
    error_after: int | None = None  # an in-stream error event after this many pieces


@dataclasses.dataclass
class Recorded:
    """One request the fake server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    disconnected: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    disconnected_at: float | None = None
    completed: bool = False  # the whole response was sent
    refused: str | None = None  # why the request was answered 400, as the real API would


class _FakeServer:
    kind = ""

    def __init__(self, default: Script | None = None) -> None:
        self.default = default or Script()
        self.requests: list[Recorded] = []
        self._scripts: deque[Script] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def queue(self, *scripts: Script) -> None:
        """Answer the next requests with ``scripts``, in order, then with ``default``."""
        self._scripts.extend(scripts)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Hang up on every client: handlers see EOF and end on their own (a cancelled
        # handler task upsets asyncio's stream protocol callback).
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=5)
            for task in pending:
                task.cancel()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                path, headers, body = request
                recorded = Recorded(path, headers, body, time.monotonic())
                self.requests.append(recorded)
                script = self._scripts.popleft() if self._scripts else self.default
                if not await self._respond(script, recorded, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(
        self,
        script: Script,
        recorded: Recorded,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection is done for."""
        await asyncio.sleep(script.headers_delay)
        extra = "".join(f"{k}: {v}\r\n" for k, v in script.headers.items())
        problem = self.request_problem(recorded.body)
        if problem is not None:
            recorded.refused = problem
            script = dataclasses.replace(script, status=400)
        if script.status != 200:
            payload = json.dumps(self.error_body(script.status, problem)).encode()
            writer.write(
                f"HTTP/1.1 {script.status} Error\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n{extra}\r\n".encode()
                + payload
            )
            await writer.drain()
            recorded.completed = True
            return True
        writer.write(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            f"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n{extra}\r\n".encode()
        )
        watcher = asyncio.create_task(self._watch(reader, recorded))
        try:
            for event in self.opening(script):
                await _send(writer, event)
            pieces = self.pieces(script)
            for index, piece in enumerate(pieces):
                if index == script.cut_after:
                    writer.transport.abort()
                    return False
                if index == script.hang_after:
                    await recorded.disconnected.wait()
                    return False
                if index == script.error_after:
                    await _send(writer, self.error_event())
                    break
                if index:
                    await asyncio.sleep(script.interval)
                for event in piece:
                    await _send(writer, event)
            else:
                if script.cut_after == len(pieces):
                    writer.transport.abort()
                    return False
                if script.hang_after == len(pieces):
                    await recorded.disconnected.wait()
                    return False
                for event in self.closing(script):
                    await _send(writer, event)
        except ConnectionError:
            recorded.disconnected.set()
            recorded.disconnected_at = recorded.disconnected_at or time.monotonic()
            return False
        finally:
            # Stop watching before the last chunk: after it, the client may send its next
            # request on this connection, and those bytes belong to the request loop.
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        recorded.completed = True
        return True

    @staticmethod
    async def _watch(reader: asyncio.StreamReader, recorded: Recorded) -> None:
        # The client sends nothing while the reply streams: EOF means it hung up.
        while await reader.read(1024):
            pass
        recorded.disconnected_at = time.monotonic()
        recorded.disconnected.set()

    # --- the wire format of each provider -----------------------------------------

    def request_problem(self, body: dict[str, Any]) -> str | None:
        """Why the real API would refuse this request (400), or None."""
        raise NotImplementedError

    def error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def opening(self, script: Script) -> list[str]:
        raise NotImplementedError

    def pieces(self, script: Script) -> list[list[str]]:
        """The reply's pieces (text tokens, then tool calls), each a list of events."""
        raise NotImplementedError

    def error_event(self) -> str:
        raise NotImplementedError

    def closing(self, script: Script) -> list[str]:
        raise NotImplementedError


class FakeOpenAIServer(_FakeServer):
    """``POST /v1/chat/completions`` with ``stream: true``, as OpenAI sends it."""

    kind = "openai"
    model = "gpt-fake"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> str:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": usage,
        }
        return f"data: {json.dumps(body)}\n\n"

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return self._chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    def request_problem(self, body: dict[str, Any]) -> str | None:
        return openai_history_problem(body)

    def error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        if status == 400:
            kind = "invalid_request_error"
        text = message or f"fake {status}"
        return {"error": {"message": text, "type": kind, "param": None, "code": None}}

    def opening(self, script: Script) -> list[str]:
        if not script.tokens and script.tool_calls:
            return []  # the first tool call's chunk carries the role
        return [self._delta({"role": "assistant", "content": "", "refusal": None})]

    def pieces(self, script: Script) -> list[list[str]]:
        pieces = [[self._delta({"content": text})] for text in script.tokens]
        for index, call in enumerate(script.tool_calls):
            head = {
                "index": index,
                "id": call.id or f"call_fake{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            delta: dict[str, Any] = {"tool_calls": [head]}
            if index == 0 and not script.tokens:
                delta = {"role": "assistant", "content": None, **delta, "refusal": None}
            pieces.append([self._delta(delta)])
            for fragment in call.arguments:
                more = {"index": index, "function": {"arguments": fragment}}
                pieces.append([self._delta({"tool_calls": [more]})])
        return pieces

    def error_event(self) -> str:
        body = {"error": {"message": "The server had an error", "type": "server_error"}}
        return f"data: {json.dumps(body)}\n\n"

    def closing(self, script: Script) -> list[str]:
        events = []
        finish = script.finish
        if finish == "auto":
            finish = "tool_calls" if script.tool_calls else "stop"
        if finish is not None:
            events.append(self._delta({}, finish))
        if script.usage is not None:
            prompt, completion = script.usage
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            events.append(self._chunk([], usage))
        if finish is not None:
            events.append("data: [DONE]\n\n")
        return events


class FakeAnthropicServer(_FakeServer):
    """``POST /v1/messages`` with ``stream: true``, as Anthropic sends it."""

    kind = "anthropic"
    model = "claude-fake"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _event(name: str, body: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(body)}\n\n"

    def _block_start(self, index: int, block: dict[str, Any]) -> str:
        body = {"type": "content_block_start", "index": index, "content_block": block}
        return self._event("content_block_start", body)

    def _block_delta(self, index: int, delta: dict[str, Any]) -> str:
        body = {"type": "content_block_delta", "index": index, "delta": delta}
        return self._event("content_block_delta", body)

    def _block_stop(self, index: int) -> str:
        return self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    @staticmethod
    def _has_text_block(script: Script) -> bool:
        return bool(script.tokens) or not script.tool_calls

    def request_problem(self, body: dict[str, Any]) -> str | None:
        return anthropic_history_problem(body)

    def error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        return {
            "type": "error",
            "error": {
                "type": kind.get(status, "api_error"),
                "message": message or f"fake {status}",
            },
        }

    def opening(self, script: Script) -> list[str]:
        prompt = script.usage[0] if script.usage else 0
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        events = [self._event("message_start", {"type": "message_start", "message": message})]
        if self._has_text_block(script):
            events.append(self._block_start(0, {"type": "text", "text": ""}))
        events.append(self._event("ping", {"type": "ping"}))
        return events

    def pieces(self, script: Script) -> list[list[str]]:
        pieces = [
            [self._block_delta(0, {"type": "text_delta", "text": text})] for text in script.tokens
        ]
        first = 1 if self._has_text_block(script) else 0
        for number, call in enumerate(script.tool_calls):
            index = first + number
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_fake{number}",
                "name": call.name,
                "input": {},
            }
            start = [self._block_stop(index - 1)] if index else []
            start.append(self._block_start(index, block))
            start.append(self._block_delta(index, {"type": "input_json_delta", "partial_json": ""}))
            pieces.append(start)
            for fragment in call.arguments:
                delta = {"type": "input_json_delta", "partial_json": fragment}
                pieces.append([self._block_delta(index, delta)])
        return pieces

    def error_event(self) -> str:
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return self._event("error", body)

    def closing(self, script: Script) -> list[str]:
        last = len(script.tool_calls) - (0 if self._has_text_block(script) else 1)
        events = [self._block_stop(last)]
        finish = script.finish
        if finish == "auto":
            finish = "tool_use" if script.tool_calls else "end_turn"
        if finish is None:
            return events
        output = script.usage[1] if script.usage else 1
        events.append(
            self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": finish, "stop_sequence": None},
                    "usage": {"output_tokens": output},
                },
            )
        )
        events.append(self._event("message_stop", {"type": "message_stop"}))
        return events


# --- the tool-history rules the real APIs enforce with a 400 ---------------------------


def openai_history_problem(body: dict[str, Any]) -> str | None:
    """An assistant message's ``tool_calls`` must each be answered by a ``tool``
    message right after it; a ``tool`` message must answer such a call; arguments
    are JSON text; a tool is a function with parameters."""
    for tool in body.get("tools", ()):
        if tool.get("type") != "function" or "parameters" not in tool.get("function", {}):
            return "Invalid 'tools': expected a function with parameters."
    waiting: list[str] = []
    for number, message in enumerate(body.get("messages", ())):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in waiting:
                return (
                    f"Invalid parameter: messages[{number}] with role 'tool' must be a response "
                    "to a preceeding message with 'tool_calls'."
                )
            waiting.remove(message["tool_call_id"])
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {', '.join(waiting)}"
            )
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                try:
                    json.loads(call["function"]["arguments"])
                except ValueError:
                    return f"messages[{number}]: function arguments are not JSON"
            waiting = [call["id"] for call in message["tool_calls"]]
    if waiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'. Missing: {', '.join(waiting)}"
        )
    return None


def anthropic_history_problem(body: dict[str, Any]) -> str | None:
    """``tool_use`` blocks need ``tools``; each must be answered by a ``tool_result``
    block in the next (user) turn, those results first in it; a ``tool_result`` must
    answer a ``tool_use`` of the turn just before."""
    messages = body.get("messages", ())
    uses_tools = any(
        isinstance(m.get("content"), list)
        and any(b.get("type") in ("tool_use", "tool_result") for b in m["content"])
        for m in messages
    )
    if uses_tools and not body.get("tools"):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    previous: set[str] = set()
    for number, message in enumerate(messages):
        blocks = message["content"] if isinstance(message.get("content"), list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if previous:
            answered = {b["tool_use_id"] for b in results}
            if message.get("role") != "user" or not previous <= answered:
                return (
                    f"messages.{number}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(previous - answered))}"
                )
        kinds = [b.get("type") for b in blocks]
        if results and kinds[: len(results)] != ["tool_result"] * len(results):
            return f"messages.{number}: tool_result blocks must come first in the content"
        stray = {b["tool_use_id"] for b in results} - previous
        if stray:
            return (
                f"messages.{number}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(sorted(stray))}"
            )
        previous = (
            {b["id"] for b in blocks if b.get("type") == "tool_use"}
            if message.get("role") == "assistant"
            else set()
        )
    if previous:
        return "the last assistant turn has tool_use blocks without results"
    return None


async def _send(writer: asyncio.StreamWriter, event: str) -> None:
    data = event.encode()
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], dict[str, Any]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    _method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    return path, headers, json.loads(raw) if raw else {}


def unused_port() -> int:
    """A local port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


__all__ = [
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "Recorded",
    "Script",
    "ScriptedCall",
    "unused_port",
]
