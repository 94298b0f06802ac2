"""``cortex-core chat`` as a person runs it: a real process against a real server."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.context.v1 import message_pb2
from support.servers import CORTEX, REPO, cortex_server

PASSWORD = "correct horse battery staple 42"
_CONVERSATION = re.compile(r"conversation (workspaces/\S+/conversations/\S+)")


def _env(password: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
        "CORTEX_CHAT_PASSWORD": password,
    }


def _chat(address: str, email: str, *extra: str) -> list[str]:
    return [str(CORTEX), "chat", "--address", address, "--email", email, *extra]


def _email() -> str:
    return f"chat-{uuid.uuid4().hex[:10]}@example.com"


def _run_chat(
    args: list[str], typed: str, password: str | None
) -> subprocess.CompletedProcess[str]:
    """Run ``cortex-core chat`` to the end; ``password`` None leaves it to be asked,
    with no controlling terminal (so getpass would read standard input)."""
    env = _env(password or "")
    if password is None:
        del env["CORTEX_CHAT_PASSWORD"]
    return subprocess.run(
        args,
        input=typed,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        start_new_session=True,
    )


def test_a_new_user_registers_and_gets_two_streamed_replies(server_address: str) -> None:
    done = _run_chat(
        _chat(server_address, _email(), "--register"),
        "Ada Lovelace\nhello there\nwhat next?\n/quit\nnever sent\n",
        PASSWORD,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("[local-dev reply]") == 2
    assert "You said: hello there" in done.stdout
    assert "You said: what next?" in done.stdout
    assert "never sent" not in done.stdout
    assert done.stdout.count("[stop · local-dev/cortex-local-dev · ") == 2
    assert "completion tokens]" in done.stdout
    assert _CONVERSATION.search(done.stderr)
    assert "Traceback" not in done.stdout + done.stderr


def test_end_of_input_also_exits_zero(server_address: str) -> None:
    done = _run_chat(
        _chat(server_address, _email(), "--register", "--display-name", "Grace"),
        "only line\n",
        PASSWORD,
    )
    assert done.returncode == 0, done.stderr
    assert "[local-dev reply] You said: only line" in done.stdout


def test_a_wrong_password_prints_the_status_and_reason_without_a_traceback(
    server_address: str,
) -> None:
    email = _email()
    with grpc.insecure_channel(server_address) as channel:
        auth_service_pb2_grpc.AuthServiceStub(channel).Register(
            auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Bo"),
            timeout=30,
        )
    done = _run_chat(_chat(server_address, email), "hello\n", "not the right password 99")
    assert done.returncode != 0
    assert "UNAUTHENTICATED" in done.stderr
    assert "INVALID_CREDENTIALS" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "[local-dev reply]" not in done.stdout


def _read_until(process: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, seen
            seen += chunk
    return seen


def test_ctrl_c_during_a_reply_cancels_it_and_returns_to_the_prompt(tmp_path: Path) -> None:
    slow = {"CORTEX_LOCAL_LLM_DELAY": "0.05"}  # about three seconds per reply
    email = _email()
    with cortex_server(tmp_path / "server", env=slow) as server:
        process = subprocess.Popen(
            _chat(server.address, email, "--register", "--display-name", "Cy"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(PASSWORD),
            cwd=REPO,
        )
        try:
            assert process.stdin is not None
            process.stdin.write(" ".join(f"w{n}" for n in range(40)).encode() + b"\n")
            process.stdin.flush()
            head = _read_until(process, b"You said:", timeout=30)
            process.send_signal(signal.SIGINT)
            head += _read_until(process, b"[cancelled", timeout=10)
            out, err = process.communicate(b"after\n/quit\n", timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stdout, stderr = (head + out).decode(), err.decode()
        assert process.returncode == 0, stderr
        assert "[cancelled · the partial reply is stored]" in stdout
        assert "[local-dev reply] You said: after" in stdout
        assert "Traceback" not in stdout + stderr

        match = _CONVERSATION.search(stderr)
        assert match
        with grpc.insecure_channel(server.address) as channel:
            login = auth_service_pb2_grpc.AuthServiceStub(channel).Login(
                auth_service_pb2.LoginRequest(email=email, password=PASSWORD),
                timeout=30,
            )
            messages = (
                cgrpc.ConversationServiceStub(channel)
                .ListMessages(
                    cpb.ListMessagesRequest(parent=match.group(1)),
                    metadata=(("authorization", f"Bearer {login.access_token}"),),
                    timeout=10,
                )
                .messages
            )
        finishes = [
            m.finish_reason for m in messages if m.role == message_pb2.MESSAGE_ROLE_ASSISTANT
        ]
        assert finishes == [message_pb2.FINISH_REASON_CANCELLED, message_pb2.FINISH_REASON_STOP]


def test_a_refused_registration_shows_each_field_violation(server_address: str) -> None:
    done = _run_chat(
        _chat(server_address, _email(), "--register", "--display-name", "Di"),
        "hello\n",
        "password123",
    )

    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr
    assert "  password: is too common" in done.stderr
    assert "(PASSWORD_TOO_COMMON)" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_reported_before_any_password_is_asked() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    done = _run_chat(_chat(address, _email()), "typed-password\nhello\n", None)

    assert done.returncode == 1
    assert f"cannot reach a Cortex server at {address}" in done.stderr
    assert "password" not in done.stderr.lower()
    assert "Traceback" not in done.stdout + done.stderr


def test_a_second_session_continues_the_conversation_it_names(server_address: str) -> None:
    email = _email()
    first = _run_chat(
        _chat(server_address, email, "--register", "--display-name", "Ada"), "first\n", PASSWORD
    )
    assert first.returncode == 0, first.stderr
    match = _CONVERSATION.search(first.stderr)
    assert match is not None, first.stderr

    again = _run_chat(
        _chat(server_address, email, "--conversation", match.group(1)), "second\n", PASSWORD
    )

    assert again.returncode == 0, again.stderr
    assert f"conversation {match.group(1)}" in again.stderr
    assert "You said: second" in again.stdout
    assert "Traceback" not in again.stdout + again.stderr
