"""The TypeScript client package (clients/typescript, ``@cortex-core/client``) as a team uses it.

Its README's complete example (examples/quickstart.ts, compiled by ``make ts-client``) runs
against a real ``cortex-core serve``: decoded field violations, register and refresh, a reply
streamed and cancelled, a task watched to the end, and an event stream resumed from its saved
token; and the helpers' own node tests pass. The package's runtime dependencies are the
versions that generated its stubs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.envoy import server_behind_envoy
from support.servers import ServerProcess, cortex_server

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "clients" / "typescript"
EXAMPLE = PACKAGE / "dist-examples" / "examples" / "quickstart.js"
HELPER_TESTS = PACKAGE / "dist-examples" / "test"
THROUGH_ENVOY = PACKAGE / "dist-examples" / "e2e" / "resume-through-envoy.js"


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose replies take a few seconds, so there is something to cancel."""
    env = {"CORTEX_LOCAL_LLM_DELAY": "0.05"}
    with cortex_server(tmp_path_factory.mktemp("ts-client-server"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def short_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Access tokens that last 3 s and a heartbeat every second: refresh and expiry happen
    within a test."""
    env = {"CORTEX_ACCESS_TOKEN_TTL": "3", "CORTEX_EVENTS_HEARTBEAT": "1"}
    with cortex_server(tmp_path_factory.mktemp("ts-helpers-server"), env=env) as server:
        yield server


def test_the_packages_runtime_is_the_version_that_generated_its_stubs() -> None:
    lock = json.loads((REPO / "tools" / "package-lock.json").read_text())
    package = json.loads((PACKAGE / "package.json").read_text())

    for name in ("@bufbuild/protobuf", "@connectrpc/connect"):
        assert package["dependencies"][name] == lock["packages"][f"node_modules/{name}"]["version"]
    assert (
        package["devDependencies"]["@connectrpc/connect-node"]
        == (lock["packages"]["node_modules/@connectrpc/connect-node"]["version"])
    )
    assert "private" not in package


def _node(built: Path) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; run 'make tools'")
    if not built.exists():
        pytest.fail(f"{built} is not built; run 'make ts-client'")
    return node


def test_the_helpers_pass_their_node_tests_against_a_real_server(
    short_token_server: ServerProcess,
) -> None:
    """Refresh before expiry (one refresh for concurrent calls), retry after UNAUTHENTICATED,
    a revoked session, decoded field violations, an event stream that reconnects after each
    dropped connection without losing or repeating an event, and one that outlives its access
    token, and which failures it resumes after (test/helpers.test.ts)."""
    node = _node(HELPER_TESTS)
    result = subprocess.run(
        [node, "--test", str(HELPER_TESTS)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=PACKAGE,
        env={**os.environ, "CORTEX_ADDRESS": short_token_server.address},
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 7" in result.stdout.splitlines(), result.stdout


def test_the_readme_example_runs_against_a_real_server(paced_server: ServerProcess) -> None:
    node = _node(EXAMPLE)

    result = subprocess.run(
        [node, str(EXAMPLE), paced_server.address],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "register=INVALID_ARGUMENT reason=INVALID_ARGUMENT" in lines
    assert "violation email: is not a valid email address" in lines
    assert lines.count("tokens=new") == 2  # registered, then refreshed
    assert any(line.startswith("user=quickstart-") for line in lines)
    assert any(line.startswith('reply=CANCELLED after "[local-dev reply]') for line in lines)
    assert "task=SUCCEEDED" in lines
    assert 'output={"text":"[local-dev] hello from the quickstart"}' in lines
    assert any(line.startswith("resumed=conversationCreated (") for line in lines)


def test_the_readme_shows_the_example_that_ci_runs_verbatim() -> None:
    readme = (PACKAGE / "README.md").read_text()
    example = (PACKAGE / "examples" / "quickstart.ts").read_text()

    assert f"```ts\n{example}```" in readme


def test_resumable_events_through_envoy_resume_after_the_server_is_killed(tmp_path: Path) -> None:
    """Behind Envoy a SIGKILLed server's stream reaches connect-node as INTERNAL (Envoy's
    RST_STREAM), not UNAVAILABLE; resumableEvents reopens it once the server is back on its
    port, and the memory created then arrives (e2e/resume-through-envoy.ts)."""
    node = _node(THROUGH_ENVOY)
    with server_behind_envoy(tmp_path, {"CORTEX_EVENTS_HEARTBEAT": "0.3"}) as behind:
        script = subprocess.Popen(
            [node, str(THROUGH_ENVOY), behind.envoy.listener, behind.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PACKAGE,
        )
        try:
            assert script.stdout is not None
            first = script.stdout.readline().strip()
            assert first == "subscribed", first + script.communicate(timeout=10)[1]
            behind.kill_and_restart()
            output, errors = script.communicate("restarted\n", timeout=30)
        finally:
            if script.poll() is None:
                script.kill()
                script.wait()

    assert script.returncode == 0, output + errors
    lines = output.splitlines()
    assert "reconnect=INTERNAL" in lines, output
    assert lines[-1] == "resumed=after-kill", output
