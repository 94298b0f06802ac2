"""The fake OpenAI-compatible server (``tests/support/fake_llm_servers.py``) in a process
of its own, for benches that must not share an event loop with it.

Prints ``listening on PORT`` once serving. Each line read from stdin sets the reply
every later request gets: ``TOKENS INTERVAL`` (a count of `` tokN`` pieces and the
seconds between them); it answers ``ok`` when set. EOF on stdin stops it.

    python -m bench.fake_llm_process
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.fake_llm_servers import FakeOpenAIServer, Script


def script(tokens: int, interval: float = 0.0) -> Script:
    """The bench replies: ``tokens`` pieces, ``interval`` seconds apart, usage reported."""
    return Script(
        tokens=tuple(f" tok{n}" for n in range(tokens)), interval=interval, usage=(20, tokens)
    )


async def serve() -> None:
    loop = asyncio.get_running_loop()
    async with FakeOpenAIServer() as fake:
        print(f"listening on {fake.port}", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            tokens, interval = line.split()
            fake.default = script(int(tokens), float(interval))
            print("ok", flush=True)


if __name__ == "__main__":
    uvloop.run(serve())
