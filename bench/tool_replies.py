"""A reply with one tool call against the same reply without tools, in one run.

Both paths go through ``ConversationService/SendMessage`` on a Cortex server
started in this process (``bootstrap``/``start``, SQLite by default) with the
local development provider, whose tool mode (docs/context.md) makes the model
step deterministic and free, so what is measured is Cortex's own cost of a tool
step: offering the tools, storing the assistant step and the tool message (two
more transactions), the ``tool_call``/``tool_result`` frames and events, the
call through the ``ToolInvoker`` (jsonschema validation, deadline) to an
in-process echo tool, and the second model turn.

* with a tool: a conversation whose ``tools`` are ``[tools/testing.echo]``, the
  message ``/call testing.echo {"n": N}``: two model turns, one call;
* without: a conversation with no tools, the same message: one model turn.

Each sample uses fresh conversations for both paths, interleaved so noise hits
both. Reported: time to the completion and to the first delta, p50/p99, and the
ratio with/without.

    python -m bench.tool_replies [--samples 40] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc.aio
import uvloop
from cortex.context.v1 import conversation_pb2, conversation_service_pb2, message_pb2

from bench.load import percentile
from bench.replies import Cortex, Reply
from cortex_core.bootstrap import bootstrap
from cortex_core.server import start
from cortex_core.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.tool_sources import RecordingTools

ECHO = "tools/testing.echo"
REPLY_TIMEOUT = 60.0


class ToolCortex(Cortex):
    async def conversation_with(self, tools: list[str]) -> str:
        created = await self._stub.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=self._workspace,
                conversation=conversation_pb2.Conversation(title="bench", tools=tools),
            ),
            metadata=self._metadata,
            timeout=10,
        )
        return str(created.conversation.name)

    async def timed(self, conversation: str, text: str, calls: int) -> Reply:
        """One reply; ok when it stopped normally after exactly ``calls`` tool results."""
        begin = time.perf_counter()
        first = 0.0
        tokens = results = 0
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
                tokens += 1
            elif kind == "tool_result":
                results += 1
            elif kind == "completion":
                finish = frame.completion.finish_reason
        ok = finish == message_pb2.FINISH_REASON_STOP and results == calls
        return Reply(first, time.perf_counter() - begin, tokens, ok)


def _row(label: str, replies: list[Reply]) -> None:
    total = [r.total for r in replies]
    first = [r.ttft for r in replies]
    print(
        f"  {label:<22} {len(replies):>4} {statistics.median(total) * 1000:10.2f}"
        f" {percentile(total, 99) * 1000:10.2f} {statistics.median(first) * 1000:10.2f}"
        f" {percentile(first, 99) * 1000:10.2f}"
    )


async def run(data_dir: Path, samples: int, database_url: str) -> tuple[list[Reply], list[Reply]]:
    tools = RecordingTools()
    settings = Settings(
        grpc_address="127.0.0.1:0", data_dir=data_dir, database_url=database_url, access_log=False
    )
    running = await start(bootstrap(settings, extra_tool_sources=[tools]))
    channel = grpc.aio.insecure_channel(running.address)
    with_tool: list[Reply] = []
    without: list[Reply] = []
    try:
        cortex = ToolCortex(channel)
        await cortex.sign_in()
        for n in range(3 + samples):  # the first three warm up connections and code paths
            text = f'/call testing.echo {{"n": {n}}}'
            tooled = await cortex.timed(await cortex.conversation_with([ECHO]), text, calls=1)
            plain = await cortex.timed(await cortex.conversation_with([]), text, calls=0)
            if not (tooled.ok and plain.ok):
                raise SystemExit(f"sample {n} did not finish as expected: {tooled}, {plain}")
            if n >= 3:
                with_tool.append(tooled)
                without.append(plain)
    finally:
        await channel.close()
        await running.drain()
    assert tools.calls["echo"] == 3 + samples
    return with_tool, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        with_tool, without = uvloop.run(run(Path(data_dir), args.samples, args.database_url))
    print("A reply with one tool call vs the same reply without tools (local-dev provider)")
    print(
        f"  {'path':<22} {'n':>4} {'total p50':>10} {'total p99':>10}"
        f" {'ttft p50':>10} {'ttft p99':>10}  (ms)"
    )
    _row("without tools", without)
    _row("one tool call", with_tool)
    for q, pick in (("p50", statistics.median), ("p99", lambda s: percentile(list(s), 99))):
        ratio = pick([r.total for r in with_tool]) / pick([r.total for r in without])
        print(f"  one tool call / without, total {q}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
