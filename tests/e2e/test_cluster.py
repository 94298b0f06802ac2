"""``cortex-core cluster`` (what ``make cluster`` runs): 2 replicas behind Envoy, real processes.

Each test runs the launcher itself with 2 replicas on a fresh database (PostgreSQL from
``CORTEX_TEST_DATABASE_URL``, required when ``CI=true``) and the shared Redis
(``CORTEX_TEST_REDIS_URL``), with every port picked free, and reads the replicas' pids
and addresses and Envoy's addresses from what it prints. A cluster of its own per test:
with one replica out of two, Envoy is not in panic mode (under 50 % healthy it would
route to every host, the dead and the draining ones too), which is the case a
deployment of N replicas losing one is in.

Clients call only Envoy's listener (gRPC over HTTP/2, and gRPC-Web over HTTP/1.1 as a
browser does), the writer of the kill test too. A write the kill broke may or may not
have committed; the writer reads the workspace to know, so "nothing lost" is checked
against every change that committed, those of the killed replica included (an event is
written in its change's transaction, docs/events.md).

Figures (calls that failed, seconds to resume, events lost and duplicated) are
printed on one ``cluster figures:`` line; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.events.v1 import event_pb2
from cortex_client import Backoff, CortexClient, EventSubscription, Tokens
from support.clients import Account, workspace_pb
from support.databases import require_env
from support.events import EventsClient, opened, renamed_to, shared_database
from support.grpc_web import grpc_web_call

from cortex_core.cluster import admin_get

REPO = Path(__file__).resolve().parents[2]
CORTEX = Path(sys.executable).with_name("cortex-core")
STARTUP_TIMEOUT = 120.0
REPLICAS = 2
_REPLICA = re.compile(r"replica (\d+) pid (\d+) serving on (\S+),")
_ENVOY = re.compile(r"envoy pid (\d+): gRPC and gRPC-Web on (\S+), admin http://(\S+),")
# What a client sees when the replica under its call or stream dies behind Envoy.
BROKEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


@dataclasses.dataclass
class Replica:
    name: str
    pid: int
    address: str


@dataclasses.dataclass
class Cluster:
    launcher: subprocess.Popen[str]
    replicas: list[Replica]
    listener: str
    admin: str
    output: list[str]
    envoy_pid: int = 0

    def host_stat(self, replica: Replica, stat: str) -> str:
        """One of Envoy's per-host values (rq_active, rq_total, health_flags)."""
        prefix = f"cortex::{replica.address}::{stat}::"
        for line in admin_get(self.admin, "/clusters").splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :]
        raise AssertionError(f"no {stat} for {replica.address} in Envoy's /clusters")

    def said(self, text: str) -> bool:
        """Whether the launcher printed a line containing ``text``."""
        return any(text in line for line in self.output)

    def live(self) -> list[Replica]:
        """The replicas the launcher has not seen exit."""
        return [r for r in self.replicas if not self.said(f"replica {r.name} exited")]

    def printed(self) -> str:
        return "\n".join(self.output)


@contextlib.contextmanager
def launched(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Cluster]:
    """``cortex-core cluster`` with ``REPLICAS`` replicas; stopped with SIGTERM afterwards."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
        "CORTEX_ACCESS_LOG": "false",
        "CORTEX_EVENTS_HEARTBEAT": "0.5",
        "CORTEX_SHUTDOWN_GRACE": "5",
    }
    command = [
        str(CORTEX), "cluster", "--replicas", str(REPLICAS), "--base-port", "0",
        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--directory", str(tmp_path / "cluster"),
        "--envoy-template", str(REPO / "envoy" / "envoy.yaml"),
        "--database-url", database_url, "--redis-url", redis_url,
    ]  # fmt: skip
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    )
    cluster = Cluster(launcher, [], "", "", [])
    stdout = launcher.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: cluster.output.extend(map(str.rstrip, stdout)))
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not cluster.said("ready:"):
            assert launcher.poll() is None, cluster.printed()
            assert time.monotonic() < deadline, cluster.printed()
            time.sleep(0.1)
        for line in cluster.output:
            if found := _REPLICA.search(line):
                cluster.replicas.append(Replica(found[1], int(found[2]), found[3]))
            if found := _ENVOY.search(line):
                cluster.envoy_pid, cluster.listener, cluster.admin = (
                    int(found[1]),
                    found[2],
                    found[3],
                )
        assert len(cluster.replicas) == REPLICAS, cluster.output
        yield cluster
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=40)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        reader.join(timeout=10)
        stdout.close()
    # Only after a test that passed: SIGTERM stopped everything, each replica drained.
    assert launcher.returncode == 0, cluster.printed()
    assert cluster.said("envoy stopped"), cluster.printed()
    for pid in [*(r.pid for r in cluster.replicas), cluster.envoy_pid]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (and reaped by the launcher)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A launched cluster of its own; its own loop for the database (the test's loop
    is not running yet while a sync fixture sets up)."""
    redis_url = require_env("CORTEX_TEST_REDIS_URL")
    loop = asyncio.new_event_loop()
    database = shared_database(tmp_path)
    try:
        database_url = loop.run_until_complete(database.__aenter__())
        with launched(tmp_path, database_url, redis_url) as running:
            yield running
    finally:
        loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


async def call_with_one_retry(client: EventsClient, account: Account) -> int:
    """GetCurrentUser through Envoy, retried once when the replica under it died;
    how many attempts failed (an error on the retry is raised)."""
    try:
        await client.me(account)
        return 0
    except grpc.aio.AioRpcError as error:
        if error.code() not in BROKEN:
            raise
    await client.me(account)
    return 1


@dataclasses.dataclass
class Subscriber:
    """A SubscribeEvents stream through Envoy that resumes from its last token."""

    client: EventsClient
    account: Account
    workspace: str
    token: str = ""
    names: list[str] = dataclasses.field(default_factory=list)
    sequences: list[int] = dataclasses.field(default_factory=list)
    breaks: list[grpc.StatusCode] = dataclasses.field(default_factory=list)
    messages: list[str] = dataclasses.field(default_factory=list)
    resumed_after: list[float] = dataclasses.field(default_factory=list)
    stream: Any = None

    async def open(self) -> None:
        self.stream = self.client.subscribe(self.account, workspaces=[self.workspace])
        self.token = await opened(self.stream)

    async def follow(self, killed: asyncio.Event, killed_at: list[float]) -> None:
        """Read until cancelled; on a broken stream, resubscribe with the last token
        (retrying while Envoy has no replica for it) and note when frames came again."""
        broken = False
        while True:
            try:
                frame = await self.stream.read()
            except grpc.aio.AioRpcError as error:
                if error.code() not in BROKEN or not killed.is_set():
                    raise  # only the kill may break a stream, and only this way
                if broken:  # the resubscription failed too: try again shortly
                    await asyncio.sleep(0.1)
                else:
                    self.breaks.append(error.code())
                    self.messages.append(str(error.details()))
                broken = True
                self.stream = self.client.subscribe(
                    self.account, workspaces=[self.workspace], resume_token=self.token
                )
                continue
            assert frame is not grpc.aio.EOF, "a stream ended without an error"
            if broken:
                self.resumed_after.append(time.monotonic() - killed_at[0])
                broken = False
            kind = frame.WhichOneof("frame")
            assert kind != "replay_unavailable", frame
            if kind == "event":
                self.names.append(renamed_to(frame.event))
                self.sequences.append(frame.event.sequence)
                self.token = frame.event.resume_token
            else:
                self.token = frame.heartbeat.resume_token


@dataclasses.dataclass
class PackageSubscriber:
    """The Python client package's EventSubscription through Envoy: it resumes by itself."""

    subscription: EventSubscription
    names: list[str] = dataclasses.field(default_factory=list)
    sequences: list[int] = dataclasses.field(default_factory=list)

    async def follow(self) -> None:
        async for event in self.subscription:
            self.names.append(renamed_to(event))
            self.sequences.append(event.sequence)


async def current_name(client: EventsClient, account: Account, workspace: str) -> str:
    """The workspace's display name, read through Envoy (retried once, like any read)."""
    request = workspace_pb.GetWorkspaceRequest(name=workspace)
    for attempt in range(2):
        try:
            response = await client.workspaces.GetWorkspace(
                request, metadata=account.metadata(), timeout=10
            )
            return str(response.workspace.display_name)
        except grpc.aio.AioRpcError as error:
            if error.code() not in BROKEN or attempt:
                raise
    raise AssertionError("unreachable")


def grpc_web_current_user(cluster: Cluster, account: Account) -> str:
    """GetCurrentUser as a browser calls it (gRPC-Web over HTTP/1.1); the user's name."""
    reply = grpc_web_call(
        cluster.listener,
        "/cortex.auth.v1.AuthService/GetCurrentUser",
        auth_pb.GetCurrentUserRequest().SerializeToString(),
        metadata={"authorization": f"Bearer {account.access_token}"},
    )
    assert reply.http_status == 200
    assert reply.grpc_status == "0", reply
    return str(auth_pb.GetCurrentUserResponse.FromString(reply.messages[0]).user.name)


async def test_a_replica_sent_sigterm_is_taken_out_by_envoy_and_no_call_fails(
    cluster: Cluster,
) -> None:
    client = EventsClient(cluster.listener)
    alice = await client.register()
    assert await asyncio.to_thread(grpc_web_current_user, cluster, alice) == alice.user
    victim, *survivors = cluster.live()
    failures: list[grpc.aio.AioRpcError] = []
    calls = [0]
    stop = asyncio.Event()

    async def call() -> None:
        while not stop.is_set():
            try:
                await client.me(alice)  # no retry: none may fail
            except grpc.aio.AioRpcError as error:
                failures.append(error)
            calls[0] += 1
            await asyncio.sleep(0.01)

    caller = asyncio.create_task(call())
    try:
        await asyncio.sleep(0.5)
        os.kill(victim.pid, signal.SIGTERM)
        signalled = time.monotonic()
        async with asyncio.timeout(20):
            while "failed_active_hc" not in (flags := cluster.host_stat(victim, "health_flags")):
                await asyncio.sleep(0.1)
        taken_out = time.monotonic() - signalled
        victim_total = int(cluster.host_stat(victim, "rq_total"))
        survivors_total = sum(int(cluster.host_stat(r, "rq_total")) for r in survivors)
        calls_then = calls[0]
        async with asyncio.timeout(20):
            while calls[0] < calls_then + 50:
                await asyncio.sleep(0.05)
        assert int(cluster.host_stat(victim, "rq_total")) == victim_total
        now_total = sum(int(cluster.host_stat(r, "rq_total")) for r in survivors)
        assert now_total >= survivors_total + 50
    finally:
        stop.set()
        await asyncio.gather(caller, return_exceptions=True)
    assert await asyncio.to_thread(grpc_web_current_user, cluster, alice) == alice.user
    await client.close()
    print(
        f"\ncluster figures (SIGTERM): Envoy marked the replica {flags} {taken_out:.2f} s "
        f"after SIGTERM; calls {calls[0]}, failed {len(failures)}"
    )
    assert failures == []
    async with asyncio.timeout(15):
        while not cluster.said(f"replica {victim.name} exited with 0"):
            await asyncio.sleep(0.1)


async def test_killing_a_replica_keeps_calls_working_and_streams_resume_with_nothing_lost(
    cluster: Cluster,
) -> None:
    client = EventsClient(cluster.listener)
    alice = await client.register()
    workspace = str((await client.first_workspace(alice)).name)
    # Two package subscriptions on their own connection, opened back to back: Envoy's
    # round robin puts one on each replica, so one of them is on the replica killed.
    package = CortexClient(
        cluster.listener,
        tokens=Tokens(alice.access_token, alice.refresh_token, time.time() + 600, alice.session),
    )
    packaged = [
        PackageSubscriber(
            EventSubscription(
                package.channel,
                workspaces=[workspace],
                event_types=[event_pb2.EVENT_TYPE_WORKSPACE_UPDATED],
                backoff=Backoff(initial=0.05, maximum=0.5, attempts=None),
            )
        )
        for _ in range(2)
    ]
    package_followers = [asyncio.create_task(p.follow()) for p in packaged]
    async with asyncio.timeout(10):  # a heartbeat each: both streams are registered
        while not all(p.subscription.resume_token for p in packaged):
            await asyncio.sleep(0.05)
    subscribers = [Subscriber(client, alice, workspace) for _ in range(6)]
    for subscriber in subscribers:
        await subscriber.open()
    # Envoy spread the streams; the victim is a replica that holds some.
    active = {r.name: int(cluster.host_stat(r, "rq_active")) for r in cluster.live()}
    victim = max(cluster.live(), key=lambda r: active[r.name])
    assert active[victim.name] >= 1, active
    writer = EventsClient(cluster.listener)  # through Envoy, like every other client

    committed: list[str] = []
    calls = [0, 0]  # made, failed once (then retried)
    writes_in_doubt: list[bool] = []  # per broken write: had it committed?
    killed = asyncio.Event()
    killed_at: list[float] = []
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            name = f"event {len(committed)}"
            try:
                await writer.rename(alice, workspace, name)
            except grpc.aio.AioRpcError as error:
                if error.code() not in BROKEN:
                    raise
                # The replica died under the call: the workspace says whether it committed
                # (if not, the same name is written again). A COMMIT the dead replica sent
                # just before the kill still lands: give PostgreSQL a moment before reading.
                await asyncio.sleep(0.5)
                done = await current_name(writer, alice, workspace) == name
                writes_in_doubt.append(done)
                if not done:
                    continue
            committed.append(name)
            await asyncio.sleep(0.02)

    async def call() -> None:
        while not stop.is_set():
            calls[1] += await call_with_one_retry(client, alice)
            calls[0] += 1
            await asyncio.sleep(0.01)

    followers = [asyncio.create_task(s.follow(killed, killed_at)) for s in subscribers]
    work = [asyncio.create_task(write()), asyncio.create_task(call())]
    try:
        await asyncio.sleep(1.0)
        before_kill = (len(committed), calls[0])
        killed_at.append(time.monotonic())
        killed.set()
        os.kill(victim.pid, signal.SIGKILL)
        async with asyncio.timeout(15):
            while "failed_active_hc" not in cluster.host_stat(victim, "health_flags"):
                await asyncio.sleep(0.1)
        marked_after = time.monotonic() - killed_at[0]
        await asyncio.sleep(max(0.0, 4.0 - marked_after))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*work), 15)
        async with asyncio.timeout(20):
            while any(len(s.names) < len(committed) for s in [*subscribers, *packaged]):
                for task in [*followers, *package_followers]:
                    if task.done():
                        task.result()  # a follower failed: say why
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # heartbeats later: anything extra would be here
    finally:
        for task in [*followers, *package_followers, *work]:
            task.cancel()
        await asyncio.gather(*followers, *package_followers, *work, return_exceptions=True)
        await client.close()
        await package.close()
        await writer.close()

    broken = [s for s in subscribers if s.breaks]
    lost = sum(len(set(committed) - set(s.names)) for s in subscribers)
    duplicated = sum(len(s.names) - len(set(s.names)) for s in subscribers)
    resumes = [t for s in broken for t in s.resumed_after]
    seen = sorted(
        {f"{c.name}: {m}" for s in broken for c, m in zip(s.breaks, s.messages, strict=True)}
    )
    print(
        f"\ncluster figures: unary calls {calls[0]} ({calls[0] - before_kill[1]} after the "
        f"kill), failed once then retried {calls[1]}, failed after a retry 0; streams "
        f"{len(subscribers)}, broken by the kill {len(broken)} "
        f"({seen}), resumed within "
        f"{max(resumes, default=0):.2f} s of the kill; events committed {len(committed)} "
        f"({len(committed) - before_kill[0]} after the kill), lost {lost}, "
        f"duplicated {duplicated}; writes broken by the kill {len(writes_in_doubt)} "
        f"(committed {sum(writes_in_doubt)}); Envoy marked the killed replica unhealthy "
        f"{marked_after:.2f} s after the kill; package subscriptions reconnected "
        f"{[p.subscription.reconnects for p in packaged]}"
    )
    assert broken, "no stream was on the killed replica"
    assert all(len(s.resumed_after) == len(s.breaks) for s in broken)
    for subscriber in subscribers:
        assert subscriber.names == committed
        assert subscriber.sequences == sorted(set(subscriber.sequences))
    # The package's subscription on the killed replica resumed by itself (Envoy reset it:
    # INTERNAL, not UNAVAILABLE), with nothing lost and nothing twice.
    assert any(p.subscription.reconnects for p in packaged)
    for p in packaged:
        assert p.names == committed
        assert p.sequences == sorted(set(p.sequences))
    assert calls[0] - before_kill[1] > 0
    assert len(committed) > before_kill[0]
    async with asyncio.timeout(5):
        while not cluster.said(f"replica {victim.name} exited with -9"):
            await asyncio.sleep(0.1)
