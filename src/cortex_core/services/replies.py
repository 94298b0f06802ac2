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
* **Tools.** The reply is one run of the bounded tool loop
  (:mod:`cortex_core.services.tool_loop`) over the conversation's ``tools``.
  Each step is stored as it ends, in its own transaction, and announced: the
  assistant message with its ``tool_calls`` (finish TOOL_CALLS), then one tool
  message per result (:mod:`cortex_core.services.reply_tools`). The message that
  ends the reply (the completion's) has the id the lease names; a reply that
  needs approval ends with that message holding the pending calls. A send with
  ``approvals`` continues it (no user message: the decided calls run first), a
  send with content denies every pending call first. Cancellation cancels the
  running calls and stores a TOOL_CANCELLED result for each, then the partial
  reply. Usage is summed over the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime, timedelta

from cortex_core import errors
from cortex_core.domain.conversations import (
    Conversation,
    FinishReason,
    Message,
    MessageRole,
)
from cortex_core.domain.events import (
    Change,
    MessageCreated,
    ReplyCompleted,
    ReplyDelta,
    ReplyStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from cortex_core.domain.identity import Caller, new_id, reject, text_violation
from cortex_core.domain.llm import Usage
from cortex_core.domain.tools import (
    ApprovalDecision,
    ToolApproval,
    ToolCall,
    ToolCallState,
    ToolContext,
    ToolResult,
    failed_result,
)
from cortex_core.ports import Clock, LlmProvider, TokenCounter, UnitOfWork, UnitOfWorkFactory
from cortex_core.services import reply_tools
from cortex_core.services.access import conversation_access
from cortex_core.services.admission import ReplyAdmission
from cortex_core.services.context import HISTORY_LIMIT, ContextManager, Sources, prompt_of
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.session_guard import SessionWatcher, Watch
from cortex_core.services.tool_invoker import ToolInvoker
from cortex_core.services.tool_loop import (
    CallResult,
    Idle,
    LoopLimits,
    ModelTurn,
    TextPiece,
    ToolLoop,
)

log = logging.getLogger(__name__)

MAX_REPLY_TOKENS = 1024
MAX_IDEMPOTENCY_KEY = 128
DEFAULT_LEASE = timedelta(minutes=10)
CANCEL_SETTLE_SECONDS = 5.0
DELTA_EVENT_INTERVAL = 0.1  # seconds: reply text reaches subscribers coalesced this often
WAIT_POLL = 0.2
# Of the caller's remaining time, what tool calls leave for the model's answer
# and the stored completion: this many seconds, or a quarter when less is left.
DEADLINE_RESERVE = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class UserMessageStored:
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyText:
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallAsked:
    call: ToolCall


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallAnswered:
    result: ToolResult


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyHeartbeat:
    """Nothing was sent for ``heartbeat`` seconds while tool calls run."""

    time: datetime


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


ReplyStep = (
    UserMessageStored
    | ReplyText
    | ToolCallAsked
    | ToolCallAnswered
    | ReplyHeartbeat
    | ReplyUsage
    | ReplyFinished
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Started:
    """A send that stored its user message (or its decisions) and holds the
    conversation's lease."""

    conversation: Conversation
    user_message: Message | None  # None: a continuation with approvals
    reply_id: str
    budget: int | None  # tokens the workspace has left (None: no limit)
    sources: Sources
    decided: list[Message] = dataclasses.field(default_factory=list)  # denied results stored
    resume: tuple[ToolCall, ...] = ()  # approved calls, to run first


@dataclasses.dataclass(slots=True)
class _Progress:
    """What one reply has done so far (for the completion, or a cancel)."""

    parts: list[str] = dataclasses.field(default_factory=list)  # this step's text
    running: dict[str, ToolCall] = dataclasses.field(default_factory=dict)  # no result yet
    final: Message | None = None  # the reply's message, when stored before the end
    finish: FinishReason = FinishReason.STOP
    error: errors.CortexError | None = None
    last_turn: Usage | None = None


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
        tools: ToolInvoker,
        limits: LoopLimits | None = None,
        heartbeat: float | None = None,
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
        self._tools = tools
        self._limits = limits or LoopLimits()
        self._heartbeat = heartbeat
        self._lease = lease
        self._live: dict[str, _Broadcast] = {}

    async def send(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        content: str,
        idempotency_key: str,
        approvals: Sequence[ToolApproval] = (),
        *,
        time_left: float | None = None,
    ) -> AsyncGenerator[ReplyStep, None]:
        """The reply's steps: the stored user message, text, tool calls and their
        results, usage, the completion. With ``approvals`` (and no content) it
        continues the reply that is waiting for them.

        ``time_left``: seconds until the caller's deadline (None: none). Tool
        calls must end :data:`DEADLINE_RESERVE` seconds (at most a quarter of
        it) before it; one that does not is stopped and answered TOOL_TIMEOUT,
        so the model can still answer and the completion be stored in time.
        While tool calls run, a :class:`ReplyHeartbeat` comes whenever nothing
        else was sent for ``heartbeat`` seconds.

        Raise (before any step) InvalidArgument, NotFound (CONVERSATION_NOT_FOUND),
        PermissionDenied (EDITOR_REQUIRED), ResourceExhausted
        (TOO_MANY_ACTIVE_REPLIES, TOKEN_BUDGET_EXHAUSTED), FailedPrecondition
        (REPLY_IN_PROGRESS, NO_PENDING_TOOL_CALLS) or Aborted
        (IDEMPOTENCY_KEY_REUSED); mid-stream, Unauthenticated when the caller's
        session ends.
        """
        reject(
            [
                *reply_tools.request_violations(content, approvals),
                text_violation(
                    idempotency_key, "idempotency_key", required=False, limit=MAX_IDEMPOTENCY_KEY
                ),
            ]
        )
        deadline = None
        if time_left is not None:
            reserve = min(DEADLINE_RESERVE, time_left / 4)
            deadline = asyncio.get_running_loop().time() + time_left - reserve
        entered = self._admission.enter()
        try:
            started = await self._begin(
                caller, workspace_id, conversation_id, content, idempotency_key, approvals
            )
            with self._sessions.watch(caller) as watch:
                steps = (
                    self._replay(started, content, watch)
                    if isinstance(started, Message)
                    else self._generate(caller, started, watch, deadline)
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
        approvals: Sequence[ToolApproval],
    ) -> _Started | Message:
        """Store the user message (or apply the approvals) and take the lease, in
        one transaction; or return the earlier message of a retried idempotency key."""
        for attempt in range(2):
            now = self._clock.now()
            reply_id = new_id()
            async with self._uow() as uow:
                workspace, conversation = await conversation_access(
                    uow, caller, workspace_id, conversation_id, write=True
                )
                if idempotency_key and not approvals:
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
                if approvals:
                    running = await uow.conversations.claim_reply(
                        conversation_id, reply_id, now, now + self._lease
                    )
                    if running is None:
                        return await self._continue(
                            uow, caller, conversation, reply_id, budget, approvals
                        )
                else:
                    # Reads first: the write lock is then held only for the writes.
                    sources = await self._context.read(
                        uow, conversation, query=content, empty=conversation.message_count == 0
                    )
                    running = await uow.conversations.claim_reply(
                        conversation_id, reply_id, now, now + self._lease
                    )
                    if running is None:
                        return await self._store_user_message(
                            uow,
                            caller,
                            conversation,
                            reply_id,
                            budget,
                            sources,
                            content,
                            idempotency_key,
                        )
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

    async def _store_user_message(
        self,
        uow: UnitOfWork,
        caller: Caller,
        conversation: Conversation,
        reply_id: str,
        budget: int | None,
        sources: Sources,
        content: str,
        idempotency_key: str,
    ) -> _Started:
        """Under the lease: deny whatever was pending, store the user message, commit."""
        now = self._clock.now()
        decided: list[Message] = []
        if reply_tools.newest_pending(sources.messages) is not None:
            pending = await reply_tools.pending_message(uow, conversation.id)  # as of now
            if pending is not None:
                decided, _ = await reply_tools.decide(
                    uow,
                    pending,
                    {call.id: ApprovalDecision.DENY for call in pending.pending_calls},
                    now=now,
                    counter=self._counter,
                    denied_because=reply_tools.DENIED_BY_MESSAGE,
                )
                sources.messages.extend(decided)
        user_message = await uow.conversations.append_message(
            Message(
                id=new_id(),
                conversation_id=conversation.id,
                workspace_id=conversation.workspace_id,
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
        started = _Started(conversation, user_message, reply_id, budget, sources, decided)
        await self._events.commit(uow, self._stored_events(caller, started))
        sources.messages.append(user_message)
        del sources.messages[:-HISTORY_LIMIT]
        return started

    async def _continue(
        self,
        uow: UnitOfWork,
        caller: Caller,
        conversation: Conversation,
        reply_id: str,
        budget: int | None,
        approvals: Sequence[ToolApproval],
    ) -> _Started:
        """Under the lease: apply the approvals to the pending calls, commit.

        Raise FailedPrecondition (NO_PENDING_TOOL_CALLS) or InvalidArgument (an
        approval for a call that is not pending); the lease is not taken then."""
        pending = await reply_tools.pending_message(uow, conversation.id)
        if pending is None:
            raise errors.FailedPrecondition(
                "no tool call in this conversation is waiting for approval",
                reason="NO_PENDING_TOOL_CALLS",
            )
        decided, approved = await reply_tools.decide(
            uow,
            pending,
            reply_tools.decisions_for(pending, approvals),
            now=self._clock.now(),
            counter=self._counter,
            denied_because=reply_tools.DENIED_BY_PERSON,
        )
        sources = await self._context.read(uow, conversation)
        started = _Started(conversation, None, reply_id, budget, sources, decided, approved)
        await self._events.commit(uow, self._stored_events(caller, started))
        return started

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
        self, caller: Caller, started: _Started, watch: Watch, deadline: float | None
    ) -> AsyncGenerator[ReplyStep, None]:
        """Stream and store one reply. The reply stops with BUDGET when prompt plus
        streamed pieces reach the workspace's budget (a streamed piece counts as
        one token). ``deadline``: the loop time by which tool calls must end."""
        conversation, reply_id, budget = started.conversation, started.reply_id, started.budget
        broadcast = self._live[reply_id] = _Broadcast()
        progress = _Progress(running={call.id: call for call in started.resume})
        loop = ToolLoop(
            provider=self._provider,
            invoker=self._tools,
            counter=self._counter,
            limits=self._limits,
            max_tokens=MAX_REPLY_TOKENS,
        )
        stored = False
        try:
            window = await self._context.assemble(
                conversation, caller.user, self._context.default_budget, started.sources
            )
            await self._events.publish([self._reply_started(caller, started)])
            # Decided calls first (denied by this message, or by the approvals), as
            # they were stored and announced; then the new user message, if any.
            first: list[ReplyStep] = [
                ToolCallAnswered(m.tool_result) for m in started.decided if m.tool_result
            ]
            if started.user_message is not None:
                first.append(UserMessageStored(started.user_message))
            for step in first:
                broadcast.add(step)
                yield step
            unpublished: list[str] = []
            clock = asyncio.get_running_loop()
            last_publish = clock.time()
            steps = loop.run(
                prompt_of(window),
                allowed=conversation.tools,
                context=ToolContext(conversation.workspace_id, caller.user_id, conversation.id),
                resume=started.resume,
                deadline=deadline,
                idle=self._heartbeat,
            )
            async with contextlib.aclosing(steps) as running:
                while True:
                    try:
                        item = await watch.interruptible(anext(running))
                    except StopAsyncIteration:
                        break
                    watch.check()
                    if isinstance(item, TextPiece):
                        progress.parts.append(item.text)
                        unpublished.append(item.text)
                        step = ReplyText(item.text)
                        broadcast.add(step)
                        yield step
                        if budget is not None and (
                            window.total_token_count + loop.generated >= budget
                        ):
                            progress.finish = FinishReason.BUDGET
                            break
                        now = clock.time()
                        if now - last_publish >= DELTA_EVENT_INTERVAL:
                            await self._publish_delta(conversation, reply_id, unpublished)
                            last_publish = now
                        continue
                    if isinstance(item, Idle):
                        yield ReplyHeartbeat(self._clock.now())  # not for followers
                        continue
                    if isinstance(item, ModelTurn):
                        await self._publish_delta(conversation, reply_id, unpublished)
                        await self._store_turn(started, progress, item, loop)
                        asked: list[ReplyStep] = [ToolCallAsked(call) for call in item.calls]
                    elif isinstance(item, CallResult):
                        await self._store_result(conversation, progress, item.result)
                        asked = [ToolCallAnswered(item.result)]
                    else:
                        progress.finish, progress.error = item.finish, item.error
                        progress.last_turn = item.usage
                        asked = []
                    for step in asked:
                        broadcast.add(step)
                        yield step
            await self._publish_delta(conversation, reply_id, unpublished)
            usage = loop.usage
            step = ReplyUsage(usage)
            broadcast.add(step)
            yield step
            reply = await self._finish(started, progress, usage, (loop.provider, loop.model))
            stored = True
            step = ReplyFinished(reply, progress.finish, loop.provider, loop.model, progress.error)
            broadcast.add(step)
            yield step
        except BaseException as exc:
            # The caller went away (the provider stream and the running tool calls
            # are already closed by aclosing) or its session ended: keep what was
            # said and what the tools answered, with the usage so far.
            if stored or not (
                isinstance(exc, asyncio.CancelledError | GeneratorExit) or exc is watch.ended
            ):
                raise
            broadcast.cancelled = True
            progress.finish, progress.last_turn = FinishReason.CANCELLED, None
            await asyncio.shield(self._cancel(started, progress, loop))
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

    def _stored_events(self, caller: Caller, started: _Started) -> list[Change]:
        """What the begin transaction stored (written in it)."""
        user_message = started.user_message
        changes: list[Change] = []
        for message in started.decided:
            changes.extend(_result_events(message))
        if user_message is not None:
            changes.append(
                MessageCreated(
                    actor_id=caller.user_id, time=user_message.create_time, message=user_message
                )
            )
        return changes

    def _reply_started(self, caller: Caller, started: _Started) -> ReplyStarted:
        """That the reply started (once its context is assembled: no stored change)."""
        user_message = started.user_message
        return ReplyStarted(
            actor_id=caller.user_id,
            time=user_message.create_time if user_message is not None else self._clock.now(),
            conversation=started.conversation,
            reply_id=started.reply_id,
            user_message=user_message,
        )

    async def _store_turn(
        self, started: _Started, progress: _Progress, turn: ModelTurn, loop: ToolLoop
    ) -> None:
        """Store a model turn that called tools: an intermediate step (TOOL_CALLS),
        or the reply's own message when it waits for approval."""
        waits = turn.finish is FinishReason.APPROVAL_REQUIRED
        message = self._assistant_message(
            started,
            message_id=started.reply_id if waits else new_id(),
            text=turn.text,
            finish=turn.finish,
            token_count=turn.usage.completion_tokens,
            served_by=(loop.provider, loop.model),
            calls=turn.calls,
            final=waits,
        )
        async with self._uow() as uow:
            message = await uow.conversations.append_message(message)
            await self._events.commit(
                uow,
                [
                    MessageCreated(actor_id="", time=message.create_time, message=message),
                    *(
                        ToolCallRequested(
                            actor_id="", time=message.create_time, message=message, tool_call=call
                        )
                        for call in turn.calls
                    ),
                ],
            )
        progress.parts = []
        progress.running.update(
            (call.id, call) for call in turn.calls if call.state is ToolCallState.CALLED
        )
        if waits:
            progress.final = message

    async def _store_result(
        self, conversation: Conversation, progress: _Progress, result: ToolResult
    ) -> None:
        message = reply_tools.result_message(
            conversation, result, now=self._clock.now(), counter=self._counter
        )
        async with self._uow() as uow:
            message = await uow.conversations.append_message(message)
            await self._events.commit(uow, _result_events(message))
        progress.running.pop(result.call_id, None)

    async def _cancel(self, started: _Started, progress: _Progress, loop: ToolLoop) -> None:
        """After a cancel: a TOOL_CANCELLED result for every call that had none,
        then the partial reply."""
        for call in list(progress.running.values()):
            result = failed_result(call, "TOOL_CANCELLED", "the reply was cancelled")
            await self._store_result(started.conversation, progress, result)
        await self._finish(started, progress, loop.usage, (loop.provider, loop.model))

    def _assistant_message(
        self,
        started: _Started,
        *,
        message_id: str,
        text: str,
        finish: FinishReason,
        token_count: int,
        served_by: tuple[str, str],
        calls: tuple[ToolCall, ...] = (),
        final: bool,
    ) -> Message:
        provider, model = served_by
        metadata = (
            {"provider": provider} if final else {"provider": provider, "reply": started.reply_id}
        )
        user_message = started.user_message
        return Message(
            id=message_id,
            conversation_id=started.conversation.id,
            workspace_id=started.conversation.workspace_id,
            position=0,
            role=MessageRole.ASSISTANT,
            content=text,
            token_count=token_count,
            create_time=self._clock.now(),
            finish_reason=finish,
            model=model,
            reply_to=user_message.id if final and user_message is not None else None,
            metadata=metadata,
            tool_calls=calls,
        )

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

    async def _finish(
        self,
        started: _Started,
        progress: _Progress,
        usage: Usage,
        served_by: tuple[str, str],
    ) -> Message:
        """Store the reply's message (unless a wait for approval stored it already),
        count its usage and release the lease, in one transaction."""
        conversation = started.conversation
        reply = progress.final
        new = reply is None
        if reply is None:
            text = "".join(progress.parts)
            last = progress.last_turn
            reply = self._assistant_message(
                started,
                message_id=started.reply_id,
                text=text,
                finish=progress.finish,
                # the provider's count of the last turn wins
                token_count=last.completion_tokens if last else self._counter.count(text),
                served_by=served_by,
                final=True,
            )
        async with self._uow() as uow:
            if new:
                reply = await uow.conversations.append_message(reply)
            await uow.conversations.record_usage(
                conversation.workspace_id,
                conversation.id,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
            await uow.conversations.release_reply(conversation.id, started.reply_id)
            changes: list[Change] = [
                ReplyCompleted(actor_id="", time=reply.create_time, message=reply)
            ]
            if new:
                changes.insert(
                    0, MessageCreated(actor_id="", time=reply.create_time, message=reply)
                )
            await self._events.commit(uow, changes)
        return reply


def _result_events(message: Message) -> list[Change]:
    changes: list[Change] = [MessageCreated(actor_id="", time=message.create_time, message=message)]
    if message.tool_result is not None:
        changes.append(
            ToolCallCompleted(
                actor_id="", time=message.create_time, message=message, result=message.tool_result
            )
        )
    return changes
