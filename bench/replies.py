"""Streamed replies through Cortex against the provider adapter called directly.

One fake OpenAI-compatible server (``tests/support/fake_llm_servers.py``, run by
``bench.fake_llm_process``) answers both paths in the same run:

* direct: ``OpenAICompatibleProvider(model=..., base_url=fake)`` called from here;
* through Cortex: ``ConversationService/SendMessage`` over gRPC to ``cortex-core
  serve`` (SQLite, access log on, JSON logs to a file), whose provider chain is
  ``openai`` pointed at the same fake server. Each reply goes to a fresh conversation.

Three processes, as deployed: the fake provider, Cortex, and this one (the client
of both paths). They share the machine's cores; nothing shares an event loop. (Until
commit 6644419 all three ran on one event loop, so the ratios measured how the
provider's, Cortex's and the client's work queued behind each other on one core,
not what Cortex adds.)

Measured:

(a) time to first token: direct = calling the adapter to its first text chunk;
    Cortex = calling SendMessage to the first ``delta`` frame (includes storing the
    user message, building the context window and publishing events);
(b) a long reply (500 tokens sent back to back): tokens/s end to end;
(c) 50 replies at once (50 conversations, paced like a model at 100 tokens/s):
    wall time, TTFT and total percentiles, aggregate tokens/s, errors.

Ratios (issue 10): TTFT with 50 at once at most 1.5x direct; the long reply's
throughput at least 0.8x direct (its frames take at most 1.25x the time).

    python -m bench.replies [--ttft-samples 40] [--long-tokens 500] [--concurrent 50]
                            [--log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.context.v1 import (
    conversation_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    message_pb2,
)
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc

from bench.load import percentile
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider
from cortex_core.domain.llm import PromptMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.servers import cortex_server

MODEL = "gpt-fake"
SYSTEM = "You are a helpful assistant."
REPLY_TIMEOUT = 60.0


@dataclasses.dataclass
class Reply:
    ttft: float  # seconds to the first text
    total: float  # seconds to the end of the reply
    tokens: int  # the provider's tokens received (see _pieces)
    ok: bool = True


class FakeProvider:
    """``bench.fake_llm_process``: its base URL, and the reply it gives from now on."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self._process = process
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def answer(self, tokens: int, interval: float = 0.0) -> None:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(f"{tokens} {interval}\n")
        self._process.stdin.flush()
        reply = await asyncio.to_thread(self._process.stdout.readline)
        if reply.strip() != "ok":
            raise RuntimeError(f"the fake provider answered {reply!r}")


@contextlib.contextmanager
def fake_provider() -> Iterator[FakeProvider]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_llm_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        yield FakeProvider(process, int(line.split()[-1]))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pieces(text: str) -> int:
    """The fake provider's tokens in ``text`` (each is `` tokN``): Cortex may carry
    several in one delta when they arrive faster than it can write frames."""
    return text.count(" tok")


async def direct_reply(provider: OpenAICompatibleProvider, text: str) -> Reply:
    messages = [PromptMessage("system", SYSTEM), PromptMessage("user", text)]
    begin = time.perf_counter()
    first = 0.0
    tokens = 0
    async with contextlib.aclosing(provider.stream(messages, max_tokens=1024)) as chunks:
        async for chunk in chunks:
            if chunk.text:
                if not tokens:
                    first = time.perf_counter() - begin
                tokens += _pieces(chunk.text)
    return Reply(first, time.perf_counter() - begin, tokens)


class Cortex:
    """A signed-in bench user on the in-process server."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._workspace = ""

    async def sign_in(self) -> None:
        account = await auth_service_pb2_grpc.AuthServiceStub(self._channel).Register(
            auth_service_pb2.RegisterRequest(
                email=f"replies-{uuid.uuid4().hex[:8]}@example.com",
                password="correct horse battery staple 42",
                display_name="Bench",
            ),
            timeout=30,
        )
        self._metadata = (("authorization", f"Bearer {account.access_token}"),)
        listed = await workspace_service_pb2_grpc.WorkspaceServiceStub(
            self._channel
        ).ListWorkspaces(workspace_service_pb2.ListWorkspacesRequest(), metadata=self._metadata)
        self._workspace = listed.workspaces[0].name

    async def conversation(self) -> str:
        created = await self._stub.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=self._workspace,
                conversation=conversation_pb2.Conversation(title="bench", system_prompt=SYSTEM),
            ),
            metadata=self._metadata,
            timeout=10,
        )
        return str(created.conversation.name)

    async def reply(self, conversation: str, text: str) -> Reply:
        begin = time.perf_counter()
        first = 0.0
        tokens = 0
        finish = message_pb2.FINISH_REASON_UNSPECIFIED
        call = self._stub.SendMessage(
            conversation_service_pb2.SendMessageRequest(conversation=conversation, content=text),
            metadata=self._metadata,
            timeout=REPLY_TIMEOUT,
        )
        async for frame in call:
            kind = frame.WhichOneof("frame")
            if kind == "delta":
                if not tokens:
                    first = time.perf_counter() - begin
                tokens += _pieces(frame.delta.text)
            elif kind == "completion":
                finish = frame.completion.finish_reason
        ok = finish == message_pb2.FINISH_REASON_STOP
        return Reply(first, time.perf_counter() - begin, tokens, ok)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f}"


def _ttft_table(direct: list[Reply], cortex: list[Reply]) -> None:
    print(f"  {'path':<22} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'total p50 ms':>13}")
    for label, replies in (("direct (adapter)", direct), ("through Cortex", cortex)):
        first = [r.ttft for r in replies]
        print(
            f"  {label:<22} {len(replies):>4} {_ms(statistics.median(first))}"
            f" {_ms(percentile(first, 99))} {_ms(statistics.median(r.total for r in replies)):>13}"
        )
    for q, pick in (("p50", statistics.median), ("p99", lambda s: percentile(list(s), 99))):
        d = pick([r.ttft for r in direct])
        c = pick([r.ttft for r in cortex])
        print(f"  overhead {q}: +{(c - d) * 1000:.2f} ms ({c / d:.2f}x)")


def _rate_table(direct: list[Reply], cortex: list[Reply]) -> None:
    print(f"  {'path':<22} {'n':>4} {'tokens':>7} {'total p50 ms':>13} {'tokens/s p50':>13}")
    rates = {}
    for label, replies in (("direct (adapter)", direct), ("through Cortex", cortex)):
        rate = statistics.median(r.tokens / r.total for r in replies)
        rates[label] = rate
        print(
            f"  {label:<22} {len(replies):>4} {replies[0].tokens:>7}"
            f" {_ms(statistics.median(r.total for r in replies)):>13} {rate:>13.0f}"
        )
    ratio = rates["through Cortex"] / rates["direct (adapter)"]
    print(f"  Cortex/direct throughput: {ratio:.2f}x")


async def _concurrently(
    count: int, one: Callable[[int], Awaitable[Reply]]
) -> tuple[float, list[Reply], Counter[str]]:
    begin = time.perf_counter()
    results = await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)
    wall = time.perf_counter() - begin
    replies = [r for r in results if isinstance(r, Reply) and r.ok]
    errors: Counter[str] = Counter()
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            errors[f"{result.code().name}: {result.details()}"] += 1
        elif isinstance(result, BaseException):
            errors[f"{type(result).__name__}: {result}"] += 1
        elif not result.ok:
            errors["finish reason not STOP"] += 1
    return wall, replies, errors


def _load_row(label: str, wall: float, replies: list[Reply], errors: Counter[str]) -> None:
    first = [r.ttft for r in replies] or [float("nan")] * 2
    total = [r.total for r in replies] or [float("nan")] * 2
    tokens = sum(r.tokens for r in replies)
    print(
        f"  {label:<22} {wall * 1000:9.0f} {_ms(statistics.median(first))}"
        f" {_ms(percentile(first, 99))} {_ms(statistics.median(total))}"
        f" {_ms(percentile(total, 99))} {tokens / wall:>9.0f} {errors.total():>7}"
    )
    for error, count in errors.most_common():
        print(f"    {count} x {error}")


@dataclasses.dataclass
class Results:
    ttft: tuple[list[Reply], list[Reply]]  # (direct, through Cortex)
    long: tuple[list[Reply], list[Reply]]
    load: tuple[tuple[float, list[Reply], Counter[str]], ...]


async def run(
    fake: FakeProvider, address: str, samples: int, long_tokens: int, concurrent: int
) -> Results:
    results = Results(([], []), ([], []), ())
    provider = OpenAICompatibleProvider(model=MODEL, base_url=fake.base_url)
    channel = grpc.aio.insecure_channel(address)
    try:
        cortex = Cortex(channel)
        await cortex.sign_in()

        # (a) time to first token, interleaved so noise hits both paths.
        await fake.answer(20)
        for _ in range(3):  # warm-up: connections, SQLite, code paths
            await direct_reply(provider, "warm up")
            await cortex.reply(await cortex.conversation(), "warm up")
        for n in range(samples):
            conversation = await cortex.conversation()
            results.ttft[0].append(await direct_reply(provider, f"question {n}"))
            results.ttft[1].append(await cortex.reply(conversation, f"question {n}"))

        # (b) a long reply sent back to back.
        await fake.answer(long_tokens)
        for n in range(5):
            conversation = await cortex.conversation()
            results.long[0].append(await direct_reply(provider, f"long {n}"))
            results.long[1].append(await cortex.reply(conversation, f"long {n}"))

        # (c) replies at once, paced like a model streaming 100 tokens/s.
        await fake.answer(100, interval=0.01)
        conversations = [await cortex.conversation() for _ in range(concurrent)]
        results.load = (
            await _concurrently(concurrent, lambda n: direct_reply(provider, f"at once {n}")),
            await _concurrently(
                concurrent, lambda n: cortex.reply(conversations[n], f"at once {n}")
            ),
        )
    finally:
        await channel.close()
        await provider.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ttft-samples", type=int, default=40)
    parser.add_argument("--long-tokens", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--log", default="", help="keep the server's JSON log in this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, fake_provider() as fake:
        env = {
            "CORTEX_LLM_PROVIDERS": "openai",
            "CORTEX_OPENAI_BASE_URL": fake.base_url,
            "CORTEX_OPENAI_MODEL": MODEL,
            "CORTEX_LOG_FORMAT": "json",
        }
        # The server's logs (JSON, access log included) go to a file, as in production.
        with cortex_server(Path(tmp), env) as server:
            results = uvloop.run(
                run(fake, server.address, args.ttft_samples, args.long_tokens, args.concurrent)
            )
        if args.log:
            shutil.copyfile(server.log_path, args.log)
        with server.log_path.open() as written:
            access_lines = sum(1 for line in written if '"logger": "cortex.access"' in line)

    print("Streamed replies: Cortex SendMessage vs the OpenAI-compatible adapter called directly")
    print(
        "  (one fake OpenAI-compatible server for both, in its own process; Cortex in its own"
        f" process, SQLite, access log on: {access_lines} lines written)"
    )
    print(
        f"(a) time to first token, 20-token reply, fresh conversation per reply,"
        f" n={args.ttft_samples}"
    )
    _ttft_table(*results.ttft)
    print(f"(b) long reply: {args.long_tokens} tokens back to back (interval 0), 5 per path")
    _rate_table(*results.long)
    print(
        f"(c) {args.concurrent} replies at once, 100 tokens each at 10 ms/token"
        f" ({args.concurrent} conversations, one user)"
    )
    print(
        f"  {'path':<22} {'wall ms':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'total p50':>9}"
        f" {'total p99':>9} {'tokens/s':>9} {'errors':>7}"
    )
    _load_row("direct (adapter)", *results.load[0])
    _load_row("through Cortex", *results.load[1])


if __name__ == "__main__":
    main()
