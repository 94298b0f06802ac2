"""The streamed reply: one generation per conversation, idempotent retries,
cancellation that stops the provider and keeps the partial reply.

``Replies.send`` is ``ConversationService.SendMessage``:

* **Admission.** At most ``max_active`` sends stream at once in this process;
  one more is refused before any work with RESOURCE_EXHAUSTED, reason
  TOO_MANY_ACTIVE_REPLIES and a RetryInfo, never queued into a timeout; the
  delays of a burst's refusals are staggered (:mod:`~cortex_core.services.admission`).
* **One transaction before the first token.** The access check, the
  idempotency lookup, the budget, everything the context window is built from
  (history, summary, memories), the reply lease and the user message are read
  and written in one unit of work; no connection is held while the provider,
  a lease or another reply is awaited.
* **The session.** The reply ends with UNAUTHENTICATED as soon as its caller
  logs out, the session is revoked or the access token expires
  (:mod:`cortex_core.services.session_guard`); what was said is stored, as on
  cancellation.
* **Provenance.** The provider and model that served the reply come with its
  chunks and are stored with it (the reply's ``metadata["provider"]`` and
  ``model``), so a replay names the same pair as the live reply did.

* **One at a time.** The conversation's reply lease is taken in the same
  transaction that stores the user message (a conditional UPDATE, so it holds
  across replicas); a second send while it is held fails *before any frame* with
  FAILED_PRECONDITION, reason REPLY_IN_PROGRESS, naming the running reply in
  ``ErrorInfo.metadata["reply"]``. The lease ends with the reply (or after
  ``lease`` if the process died).
* **Idempotent.** A retry with the same ``idempotency_key`` stores nothing: if
  the first reply finished, it gets the stored user message and completion; if
  it is still streaming in this process, the retry joins it (every frame so
  far, then live); on another replica it waits for the stored result. The same
  key with different content is ABORTED, reason IDEMPOTENCY_KEY_REUSED.
* **Cancellation.** When the caller cancels or its deadline passes, the
  provider's stream is closed at once (``aclosing``), and the partial reply is
  stored with finish reason CANCELLED and the usage so far.
* **Failures.** A provider failure ends the reply with an explicit completion:
  finish reason ERROR and the error (reason NO_PROVIDER_AVAILABLE when it failed
  before the first token), with whatever text had arrived stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta

from cortex_core import errors
from cortex_core.domain.conversations import (
    MAX_CONTENT,
    Conversation,
    FinishReason,
    Message,
    MessageRole,
)
from cortex_core.domain.events import MessageCreated, ReplyCompleted, ReplyDelta, ReplyStarted
from cortex_core.domain.identity import Caller, new_id, reject, text_violation
from cortex_core.domain.llm import Usage
from cortex_core.ports import Clock, LlmProvider, TokenCounter, UnitOfWorkFactory
from cortex_core.services.access import conversation_access
from cortex_core.services.admission import ReplyAdmission
from cortex_core.services.context import HISTORY_LIMIT, ContextManager, Sources, prompt_of
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.session_guard import SessionWatcher, Watch

log = logging.getLogger(__name__)

MAX_REPLY_TOKENS = 1024
MAX_IDEMPOTENCY_KEY = 128
DEFAULT_LEASE = timedelta(minutes=10)
CANCEL_SETTLE_SECONDS = 5.0
DELTA_EVENT_INTERVAL = 0.1  # seconds: reply text reaches subscribers coalesced this often
WAIT_POLL = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class UserMessageStored:
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyText:
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyUsage:
    usage: Usage


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyFinished:
    message: Message
    finish_reason: FinishReason
    provider: str
    model: str
    error: errors.CortexError | None = None


ReplyStep = UserMessageStored | ReplyText | ReplyUsage | ReplyFinished


@dataclasses.dataclass(frozen=True, slots=True)
class _Started:
    """A send that stored its user message and holds the conversation's lease."""

    conversation: Conversation
    user_message: Message
    reply_id: str
    budget: int | None  # tokens the workspace has left (None: no limit)
    sources: Sources


class _Broadcast:
    """Every step of one live reply, for retries that join it.

    Adding a step is a list append plus waking whoever follows (usually nobody),
    so the streaming path pays next to nothing for it.
    """

    def __init__(self) -> None:
        self.steps: list[ReplyStep] = []
        self.done = False
        self.cancelled = False  # its caller went away; it is only storing the partial reply
        self._waiters: list[asyncio.Future[None]] = []

    async def finished(self) -> None:
        """Wait until the reply is stored and its lease released."""
        while not self.done:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def add(self, step: ReplyStep) -> None:
        self.steps.append(step)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def follow(self) -> AsyncIterator[ReplyStep]:
        sent = 0
        while True:
            while sent < len(self.steps):
                yield self.steps[sent]
                sent += 1
            if self.done:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class Replies:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        events: EventBus,
        counter: TokenCounter,
        provider: LlmProvider,
        context: ContextManager,
        sessions: SessionWatcher,
        max_active: int,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events
        self._counter = counter
        self._provider = provider
        self._context = context
        self._sessions = sessions
        self._admission = ReplyAdmission(max_active)
        self._lease = lease
        self._live: dict[str, _Broadcast] = {}

    async def send(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        content: str,
        idempotency_key: str,
    ) -> AsyncGenerator[ReplyStep, None]:
        """The reply's steps: the stored user message, text, usage, the completion.

        Raise (before any step) InvalidArgument, NotFound (CONVERSATION_NOT_FOUND),
        PermissionDenied (EDITOR_REQUIRED), ResourceExhausted
        (TOO_MANY_ACTIVE_REPLIES, TOKEN_BUDGET_EXHAUSTED), FailedPrecondition
        (REPLY_IN_PROGRESS) or Aborted (IDEMPOTENCY_KEY_REUSED); mid-stream,
        Unauthenticated when the caller's session ends.
        """
        reject(
            [
                text_violation(content, "content", required=True, limit=MAX_CONTENT),
                text_violation(
                    idempotency_key, "idempotency_key", required=False, limit=MAX_IDEMPOTENCY_KEY
                ),
            ]
        )
        entered = self._admission.enter()
        try:
            started = await self._begin(
                caller, workspace_id, conversation_id, content, idempotency_key
            )
            with self._sessions.watch(caller) as watch:
                steps = (
                    self._replay(started, content, watch)
                    if isinstance(started, Message)
                    else self._generate(caller, started, watch)
                )
                async with contextlib.aclosing(steps) as closing:  # store a partial at once
                    async for step in closing:
                        yield step
        finally:
            self._admission.leave(entered)

    async def _begin(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        content: str,
        idempotency_key: str,
    ) -> _Started | Message:
        """Store the user message and take the lease, in one transaction; or return
        the earlier message of a retried idempotency key."""
        for attempt in range(2):
            now = self._clock.now()
            reply_id = new_id()
            async with self._uow() as uow:
                workspace, conversation = await conversation_access(
                    uow, caller, workspace_id, conversation_id, write=True
                )
                if idempotency_key:
                    earlier = await uow.conversations.get_message_by_key(
                        conversation_id, idempotency_key
                    )
                    if earlier is not None:
                        return earlier
                budget = workspace.tokens_left
                if budget == 0:
                    raise errors.ResourceExhausted(
                        "the workspace's token budget is spent", reason="TOKEN_BUDGET_EXHAUSTED"
                    )
                # Reads first: the write lock is then held only for the two writes.
                sources = await self._context.read(
                    uow, conversation, query=content, empty=conversation.message_count == 0
                )
                running = await uow.conversations.claim_reply(
                    conversation_id, reply_id, now, now + self._lease
                )
                if running is None:
                    user_message = await uow.conversations.append_message(
                        Message(
                            id=new_id(),
                            conversation_id=conversation.id,
                            workspace_id=workspace_id,
                            position=0,
                            role=MessageRole.USER,
                            content=content,
                            token_count=self._counter.count(content),
                            create_time=now,
                            author_id=caller.user_id,
                            idempotency_key=idempotency_key or None,
                            metadata={"reply": reply_id},
                        )
                    )
                    await uow.commit()
                    sources.messages.append(user_message)
                    del sources.messages[:-HISTORY_LIMIT]
                    return _Started(conversation, user_message, reply_id, budget, sources)
            # A reply whose caller just cancelled it (here) is only storing what it
            # said: wait for it rather than refuse the caller's next message.
            live = self._live.get(running)
            if attempt == 0 and live is not None and live.cancelled:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CANCEL_SETTLE_SECONDS):
                        await live.finished()
                continue
            raise errors.FailedPrecondition(
                "another reply in this conversation has not finished",
                reason="REPLY_IN_PROGRESS",
                metadata={"reply": f"{conversation.name}/messages/{running}"},
            )
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _replay(
        self, earlier: Message, content: str, watch: Watch
    ) -> AsyncGenerator[ReplyStep, None]:
        """The retry of a send: the stored or live outcome of the first attempt."""
        if earlier.content != content:
            raise errors.Aborted(
                "this idempotency key was used for a different message",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        live = self._live.get(str(dict(earlier.metadata).get("reply", "")))
        if live is not None:
            async for step in live.follow():
                watch.check()
                yield step
            return
        yield UserMessageStored(earlier)
        deadline = self._clock.now() + self._lease
        while True:
            async with self._uow() as uow:
                stored = await uow.conversations.reply_to(earlier.conversation_id, earlier.id)
            if stored is not None:
                error = None
                if stored.finish_reason is FinishReason.ERROR:
                    error = errors.Unavailable("the reply failed", reason="PROVIDER_FAILED")
                provider = str(dict(stored.metadata).get("provider", "")) or self._provider.name
                yield ReplyFinished(stored, stored.finish_reason, provider, stored.model, error)
                return
            if self._clock.now() >= deadline:
                raise errors.Unavailable("the original reply never finished", reason="REPLY_LOST")
            watch.check()
            await asyncio.sleep(WAIT_POLL)

    async def _generate(
        self, caller: Caller, started: _Started, watch: Watch
    ) -> AsyncGenerator[ReplyStep, None]:
        """Stream and store one reply. The reply stops with BUDGET when prompt plus
        streamed pieces reach the workspace's budget (a streamed piece counts as
        one token)."""
        conversation, user_message, reply_id = (
            started.conversation,
            started.user_message,
            started.reply_id,
        )
        budget = started.budget
        broadcast = self._live[reply_id] = _Broadcast()
        parts: list[str] = []
        usage: Usage | None = None
        finish = FinishReason.STOP
        error: errors.CortexError | None = None
        provider, model = self._provider.name, self._provider.model
        stored = False
        try:
            window = await self._context.assemble(
                conversation, caller.user, self._context.default_budget, started.sources
            )
            await self._events.publish(
                [
                    MessageCreated(
                        actor_id=caller.user_id, time=user_message.create_time, message=user_message
                    ),
                    ReplyStarted(
                        actor_id=caller.user_id,
                        time=user_message.create_time,
                        conversation=conversation,
                        reply_id=reply_id,
                        user_message=user_message,
                    ),
                ]
            )
            step: ReplyStep = UserMessageStored(user_message)
            broadcast.add(step)
            yield step
            unpublished: list[str] = []
            loop = asyncio.get_running_loop()
            last_publish = loop.time()
            try:
                stream = self._provider.stream(prompt_of(window), max_tokens=MAX_REPLY_TOKENS)
                async with contextlib.aclosing(stream) as chunks:
                    while True:
                        try:
                            chunk = await watch.interruptible(anext(chunks))
                        except StopAsyncIteration:
                            break
                        watch.check()
                        if chunk.provider:
                            provider, model = chunk.provider, chunk.model
                        if chunk.text:
                            parts.append(chunk.text)
                            unpublished.append(chunk.text)
                            step = ReplyText(chunk.text)
                            broadcast.add(step)
                            yield step
                            if budget is not None and (
                                window.total_token_count + len(parts) >= budget
                            ):
                                finish = FinishReason.BUDGET
                                break
                            now = loop.time()
                            if now - last_publish >= DELTA_EVENT_INTERVAL:
                                await self._publish_delta(conversation, reply_id, unpublished)
                                last_publish = now
                        if chunk.usage is not None:
                            usage = chunk.usage
                        if chunk.finish is not None:
                            finish = chunk.finish
            except errors.Unauthenticated as exc:
                if exc is watch.ended:
                    raise
                finish, error = FinishReason.ERROR, exc
            except Exception as exc:  # the provider's failure becomes an explicit completion
                log.warning("reply failed", exc_info=exc, extra={"reply": reply_id})
                finish = FinishReason.ERROR
                if isinstance(exc, errors.CortexError):
                    error = exc
                elif parts:
                    error = errors.Unavailable(
                        "the model failed while replying", reason="PROVIDER_FAILED"
                    )
                else:
                    error = errors.Unavailable(
                        "no model provider is available", reason="NO_PROVIDER_AVAILABLE"
                    )
            await self._publish_delta(conversation, reply_id, unpublished)
            usage = usage or Usage(window.total_token_count, self._counter.count("".join(parts)))
            step = ReplyUsage(usage)
            broadcast.add(step)
            yield step
            reply = await self._store(
                conversation, user_message, reply_id, parts, finish, usage, (provider, model)
            )
            stored = True
            step = ReplyFinished(reply, finish, provider, model, error)
            broadcast.add(step)
            yield step
        except BaseException as exc:
            # The caller went away (the provider stream is already closed by
            # aclosing) or its session ended: keep what was said, with the usage so far.
            if stored or not (
                isinstance(exc, asyncio.CancelledError | GeneratorExit) or exc is watch.ended
            ):
                raise
            broadcast.cancelled = True
            partial = Usage(0, self._counter.count("".join(parts)))
            await asyncio.shield(
                self._store(
                    conversation,
                    user_message,
                    reply_id,
                    parts,
                    FinishReason.CANCELLED,
                    partial,
                    (provider, model),
                )
            )
            stored = True
            raise
        finally:
            try:
                if not stored:
                    with contextlib.suppress(errors.CortexError):
                        await asyncio.shield(self._release(conversation.id, reply_id))
            finally:
                # Only now: a follower or a waiting next send must find the lease free.
                broadcast.finish()
                self._live.pop(reply_id, None)

    async def _release(self, conversation_id: str, reply_id: str) -> None:
        async with self._uow() as uow:
            await uow.conversations.release_reply(conversation_id, reply_id)
            await uow.commit()

    async def _publish_delta(
        self, conversation: Conversation, reply_id: str, pieces: list[str]
    ) -> None:
        """Announce the text not announced yet as one ``reply_delta`` event."""
        if not pieces:
            return
        text = "".join(pieces)
        pieces.clear()
        await self._events.publish(
            [
                ReplyDelta(
                    actor_id="",
                    time=self._clock.now(),
                    conversation=conversation,
                    reply_id=reply_id,
                    text=text,
                )
            ]
        )

    async def _store(
        self,
        conversation: Conversation,
        user_message: Message,
        reply_id: str,
        parts: list[str],
        finish: FinishReason,
        usage: Usage,
        served_by: tuple[str, str],
    ) -> Message:
        """Store the reply, count its usage and release the lease, in one transaction."""
        provider, model = served_by
        reply = Message(
            id=reply_id,
            conversation_id=conversation.id,
            workspace_id=conversation.workspace_id,
            position=0,
            role=MessageRole.ASSISTANT,
            content="".join(parts),
            token_count=usage.completion_tokens,  # the provider's count wins
            create_time=self._clock.now(),
            finish_reason=finish,
            model=model,
            reply_to=user_message.id,
            metadata={"provider": provider},
        )
        async with self._uow() as uow:
            reply = await uow.conversations.append_message(reply)
            await uow.conversations.record_usage(
                conversation.workspace_id,
                conversation.id,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
            await uow.conversations.release_reply(conversation.id, reply_id)
            await uow.commit()
        await self._events.publish(
            [
                MessageCreated(actor_id="", time=reply.create_time, message=reply),
                ReplyCompleted(actor_id="", time=reply.create_time, message=reply),
            ]
        )
        return reply
