"""The streamed reply: one generation per conversation, idempotent retries,
cancellation that stops the provider and keeps the partial reply.

``Replies.send`` is ``ConversationService.SendMessage``:

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
from collections.abc import AsyncIterator
from datetime import timedelta

from cortex_core import errors
from cortex_core.domain import changes
from cortex_core.domain.cache_keys import conversation_context_prefix
from cortex_core.domain.conversations import (
    MAX_CONTENT,
    Conversation,
    FinishReason,
    Message,
    MessageRole,
)
from cortex_core.domain.identity import Caller, new_id, reject, text_violation
from cortex_core.domain.llm import Usage
from cortex_core.ports import Cache, Clock, LlmProvider, TokenCounter, UnitOfWorkFactory
from cortex_core.services.context import ContextManager, load_conversation, prompt_of
from cortex_core.services.dispatcher import EventBus

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
class SendMessage:
    """The command behind ``ConversationService.SendMessage``."""

    caller: Caller
    workspace_id: str
    conversation_id: str
    content: str
    idempotency_key: str = ""


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
        cache: Cache,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events
        self._counter = counter
        self._provider = provider
        self._context = context
        self._cache = cache
        self._lease = lease
        self._live: dict[str, _Broadcast] = {}

    def handle(self, command: SendMessage) -> AsyncIterator[ReplyStep]:
        """The :class:`SendMessage` command's handler."""
        return self.send(
            command.caller,
            command.workspace_id,
            command.conversation_id,
            command.content,
            command.idempotency_key,
        )

    async def send(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        content: str,
        idempotency_key: str,
    ) -> AsyncIterator[ReplyStep]:
        reject(
            [
                text_violation(content, "content", required=True, limit=MAX_CONTENT),
                text_violation(
                    idempotency_key, "idempotency_key", required=False, limit=MAX_IDEMPOTENCY_KEY
                ),
            ]
        )
        for attempt in range(2):
            now = self._clock.now()
            reply_id = new_id()
            running = None
            async with self._uow() as uow:
                conversation = await load_conversation(
                    uow, caller, workspace_id, conversation_id, write=True
                )
                earlier = (
                    await uow.conversations.get_message_by_key(conversation_id, idempotency_key)
                    if idempotency_key
                    else None
                )
                if earlier is None:
                    workspace = await uow.workspaces.get(workspace_id)
                    if workspace is not None and workspace.tokens_left == 0:
                        raise errors.ResourceExhausted(
                            "the workspace's token budget is spent",
                            reason="TOKEN_BUDGET_EXHAUSTED",
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
            if running is None:
                break
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
        if earlier is not None:
            async for step in self._replay(earlier, content):
                yield step
            return
        budget = workspace.tokens_left if workspace is not None else None
        async for step in self._generate(caller, conversation, user_message, reply_id, budget):
            yield step

    async def _replay(self, earlier: Message, content: str) -> AsyncIterator[ReplyStep]:
        """The retry of a send: the stored or live outcome of the first attempt."""
        if earlier.content != content:
            raise errors.Aborted(
                "this idempotency key was used for a different message",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        live = self._live.get(str(dict(earlier.metadata).get("reply", "")))
        if live is not None:
            async for step in live.follow():
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
                yield ReplyFinished(
                    stored, stored.finish_reason, self._provider.name, stored.model, error
                )
                return
            if self._clock.now() >= deadline:
                raise errors.Unavailable("the original reply never finished", reason="REPLY_LOST")
            await asyncio.sleep(WAIT_POLL)

    async def _generate(
        self,
        caller: Caller,
        conversation: Conversation,
        user_message: Message,
        reply_id: str,
        budget: int | None,
    ) -> AsyncIterator[ReplyStep]:
        """Stream and store one reply. ``budget``: tokens the workspace has left
        (None: no limit); the reply stops with BUDGET when prompt plus streamed
        pieces reach it (a streamed piece counts as one token)."""
        broadcast = self._live[reply_id] = _Broadcast()
        parts: list[str] = []
        usage: Usage | None = None
        finish = FinishReason.STOP
        error: errors.CortexError | None = None
        try:
            await self._cache.delete_prefix(
                conversation_context_prefix(conversation.workspace_id, conversation.id)
            )
            window = await self._context.build(
                conversation, caller.user, self._context.default_budget
            )
            await self._events.publish(
                [
                    changes.MessageCreated(
                        actor_id=caller.user_id, time=user_message.create_time, message=user_message
                    ),
                    changes.ReplyStarted(
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
            last_publish = asyncio.get_running_loop().time()
            try:
                stream = self._provider.stream(prompt_of(window), max_tokens=MAX_REPLY_TOKENS)
                async with contextlib.aclosing(stream) as chunks:
                    async for chunk in chunks:
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
                            now = asyncio.get_running_loop().time()
                            if now - last_publish >= DELTA_EVENT_INTERVAL:
                                await self._publish_delta(conversation, reply_id, unpublished)
                                last_publish = now
                        if chunk.usage is not None:
                            usage = chunk.usage
                        if chunk.finish is not None:
                            finish = chunk.finish
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
            reply = await self._store(conversation, user_message, reply_id, parts, finish, usage)
            step = ReplyFinished(reply, finish, self._provider.name, self._provider.model, error)
            broadcast.add(step)
            yield step
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away: the provider stream is already closed (aclosing);
            # keep what was said, with the usage so far.
            broadcast.cancelled = True
            partial = Usage(0, self._counter.count("".join(parts)))
            await asyncio.shield(
                self._store(
                    conversation, user_message, reply_id, parts, FinishReason.CANCELLED, partial
                )
            )
            raise
        finally:
            try:
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
                changes.ReplyDelta(
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
    ) -> Message:
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
            model=self._provider.model,
            reply_to=user_message.id,
        )
        async with self._uow() as uow:
            reply = await uow.conversations.append_message(reply)
            await uow.conversations.record_usage(
                conversation.workspace_id,
                conversation.id,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
            await uow.commit()
        await self._cache.delete_prefix(
            conversation_context_prefix(conversation.workspace_id, conversation.id)
        )
        await self._events.publish(
            [
                changes.MessageCreated(actor_id="", time=reply.create_time, message=reply),
                changes.ReplyCompleted(actor_id="", time=reply.create_time, message=reply),
            ]
        )
        return reply
