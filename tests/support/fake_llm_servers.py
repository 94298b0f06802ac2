"""Local HTTP servers that speak the OpenAI and Anthropic streaming wire formats.

A small asyncio HTTP/1.1 server (keep-alive, chunked server-sent events) so the real
``openai`` and ``anthropic`` SDKs can be pointed at ``127.0.0.1``. Each request is
answered by the next queued :class:`Script` (or ``default``), and recorded with what
the client sent and whether, and when, the client closed the connection mid-reply.
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
class Script:
    """What the fake server does for one request."""

    tokens: Sequence[str] = ("Hello", ",", " world")
    status: int = 200  # anything else: an error body in the provider's format
    finish: str | None = "stop"  # None: the stream ends without a finish reason
    usage: tuple[int, int] | None = (11, 3)  # (prompt, completion) or not reported
    interval: float = 0.0  # seconds between token events
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    headers_delay: float = 0.0  # seconds before the response starts
    cut_after: int | None = None  # drop the connection after this many tokens
    hang_after: int | None = None  # stop sending (connection kept open) after this many
    error_after: int | None = None  # an in-stream error event after this many tokens


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
        if script.status != 200:
            payload = json.dumps(self.error_body(script.status)).encode()
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
            for index, token in enumerate(script.tokens):
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
                await _send(writer, self.token(token))
            else:
                if script.cut_after == len(script.tokens):
                    writer.transport.abort()
                    return False
                if script.hang_after == len(script.tokens):
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

    def error_body(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def opening(self, script: Script) -> list[str]:
        raise NotImplementedError

    def token(self, text: str) -> str:
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

    def error_body(self, status: int) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return {"error": {"message": f"fake {status}", "type": kind, "param": None, "code": None}}

    def opening(self, script: Script) -> list[str]:
        delta = {"role": "assistant", "content": "", "refusal": None}
        return [
            self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        ]

    def token(self, text: str) -> str:
        delta = {"content": text}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def error_event(self) -> str:
        body = {"error": {"message": "The server had an error", "type": "server_error"}}
        return f"data: {json.dumps(body)}\n\n"

    def closing(self, script: Script) -> list[str]:
        events = []
        if script.finish is not None:
            events.append(
                self._chunk(
                    [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": script.finish}]
                )
            )
        if script.usage is not None:
            prompt, completion = script.usage
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            events.append(self._chunk([], usage))
        if script.finish is not None:
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

    def error_body(self, status: int) -> dict[str, Any]:
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
            "error": {"type": kind.get(status, "api_error"), "message": f"fake {status}"},
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
        return [
            self._event("message_start", {"type": "message_start", "message": message}),
            self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            self._event("ping", {"type": "ping"}),
        ]

    def token(self, text: str) -> str:
        delta = {"type": "text_delta", "text": text}
        return self._event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )

    def error_event(self) -> str:
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return self._event("error", body)

    def closing(self, script: Script) -> list[str]:
        events = [self._event("content_block_stop", {"type": "content_block_stop", "index": 0})]
        if script.finish is None:
            return events
        output = script.usage[1] if script.usage else 1
        events.append(
            self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": script.finish, "stop_sequence": None},
                    "usage": {"output_tokens": output},
                },
            )
        )
        events.append(self._event("message_stop", {"type": "message_stop"}))
        return events


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


__all__ = ["FakeAnthropicServer", "FakeOpenAIServer", "Recorded", "Script", "unused_port"]
