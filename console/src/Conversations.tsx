import { useEffect, useRef, useState } from "react";
import { CortexError } from "@cortex-core/client";
import {
  FinishReason,
  MessageRole,
  ToolCallState,
  type Message,
  type ToolCall,
  type ToolResult,
} from "@cortex-core/client/gen/cortex/context/v1/message_pb.js";
import { ToolApprovalDecision } from "@cortex-core/client/gen/cortex/context/v1/conversation_service_pb.js";
import { conversations, tools } from "./api";
import { ContextViewer } from "./ContextViewer";
import { enumName, ErrorBox, Json, StatusBox, useAction, useLoad, when } from "./util";
import type { Status } from "@cortex-core/client";

export function Conversations({ workspace }: { workspace: string }) {
  const list = useLoad(
    async () => (await conversations.listConversations({ parent: workspace, pageSize: 100 })).conversations,
    [workspace],
  );
  const toolList = useLoad(async () => (await tools.listTools({ pageSize: 100 })).tools, []);
  // The open conversation is in the URL (#/conversations/<id>), so a reload keeps it.
  const fromHash = window.location.hash.match(/^#\/conversations\/([^/]+)$/)?.[1];
  const [selected, select] = useState<string | undefined>(
    fromHash ? `${workspace}/conversations/${fromHash}` : undefined,
  );
  const setSelected = (name: string) => {
    window.location.hash = `#/conversations/${name.split("/").pop()}`;
    select(name);
  };
  const [title, setTitle] = useState("");
  const [systemPrompt, setSystemPrompt] = useState("");
  const [allowed, setAllowed] = useState<string[]>([]);
  const { error, run } = useAction();

  async function create() {
    const made = await run(() =>
      conversations.createConversation({
        parent: workspace,
        conversation: { title, systemPrompt, tools: allowed },
      }),
    );
    if (made?.conversation) {
      setTitle("");
      list.reload();
      setSelected(made.conversation.name);
    }
  }
  return (
    <div className="split">
      <aside>
        <h2>Conversations</h2>
        <ErrorBox error={list.error ?? error} />
        <ul className="pick" data-testid="conversation-list">
          {list.data?.map((c) => (
            <li key={c.name} className={c.name === selected ? "selected" : ""} onClick={() => setSelected(c.name)}>
              {c.title || c.name.split("/").pop()} <small>{c.messageCount} messages</small>
            </li>
          ))}
        </ul>
        <div className="stack">
          <input placeholder="title" data-testid="new-conversation-title" value={title} onChange={(e) => setTitle(e.target.value)} />
          <textarea placeholder="system prompt (optional)" rows={2} value={systemPrompt} onChange={(e) => setSystemPrompt(e.target.value)} />
          <label>
            tools the replies may call
            <select
              multiple
              data-testid="new-conversation-tools"
              value={allowed}
              onChange={(e) => setAllowed(Array.from(e.target.selectedOptions, (o) => o.value))}
            >
              {toolList.data?.map((t) => (
                <option key={t.name} value={t.name}>
                  {t.name}
                  {t.requiresApproval ? " (approval)" : ""}
                </option>
              ))}
            </select>
          </label>
          <button onClick={create} data-testid="create-conversation">
            New conversation
          </button>
        </div>
      </aside>
      <section>{selected ? <Transcript key={selected} conversation={selected} onReplied={list.reload} /> : <p>Pick or create a conversation.</p>}</section>
    </div>
  );
}

interface LiveReply {
  text: string;
  toolCalls: ToolCall[];
  toolResults: ToolResult[];
  usage?: { prompt: number; completion: number };
  finish?: FinishReason;
  error?: Status;
  model?: string;
}

function Transcript({ conversation, onReplied }: { conversation: string; onReplied: () => void }) {
  const history = useLoad(
    async () => (await conversations.listMessages({ parent: conversation, pageSize: 200, order: 1 })).messages,
    [conversation],
  );
  const [content, setContent] = useState("");
  const [live, setLive] = useState<LiveReply>();
  const [pending, setPending] = useState<Message[]>([]);
  const [streamError, setStreamError] = useState<CortexError>();
  const [showContext, setShowContext] = useState(false);
  const stop = useRef<AbortController | undefined>(undefined);
  const [streaming, setStreaming] = useState(false);
  useEffect(() => () => stop.current?.abort(), []);

  async function stream(request: { content?: string; approvals?: { toolCallId: string; decision: ToolApprovalDecision }[] }) {
    const controller = new AbortController();
    stop.current = controller;
    setStreaming(true);
    setStreamError(undefined);
    setLive({ text: "", toolCalls: [], toolResults: [] });
    setPending([]);
    try {
      for await (const response of conversations.sendMessage(
        { conversation, idempotencyKey: crypto.randomUUID(), ...request },
        { signal: controller.signal },
      )) {
        const frame = response.frame;
        if (frame.case === "userMessage") setPending([frame.value]);
        else if (frame.case === "delta") setLive((r) => r && { ...r, text: r.text + frame.value.text });
        else if (frame.case === "toolCall") setLive((r) => r && { ...r, toolCalls: [...r.toolCalls, frame.value] });
        else if (frame.case === "toolResult") setLive((r) => r && { ...r, toolResults: [...r.toolResults, frame.value] });
        else if (frame.case === "usage")
          setLive((r) => r && { ...r, usage: { prompt: frame.value.promptTokens, completion: frame.value.completionTokens } });
        else if (frame.case === "completion")
          setLive(
            (r) =>
              r && {
                ...r,
                finish: frame.value.finishReason,
                error: frame.value.error,
                model: `${frame.value.provider} / ${frame.value.model}`,
              },
          );
      }
    } catch (error) {
      const failure = CortexError.from(error);
      setStreamError(failure);
      // A stopped reply is stored (with CANCELLED) just after the call ends: look again.
      if (controller.signal.aborted) for (const ms of [300, 1000, 2500]) setTimeout(history.reload, ms);
    } finally {
      stop.current = undefined;
      setStreaming(false);
      history.reload();
      onReplied();
    }
  }

  async function send() {
    const text = content;
    setContent("");
    await stream({ content: text });
  }

  const messages = history.data ?? [];
  const last = messages[messages.length - 1];
  const waiting =
    !streaming && last?.role === MessageRole.ASSISTANT
      ? last.toolCalls.filter((call) => call.state === ToolCallState.PENDING_APPROVAL)
      : [];
  return (
    <div className="transcript">
      <div className="row">
        <h2>Transcript</h2>
        <button onClick={() => setShowContext((v) => !v)} data-testid="toggle-context">
          {showContext ? "Hide context window" : "Context window"}
        </button>
      </div>
      {showContext && <ContextViewer conversation={conversation} />}
      <ErrorBox error={history.error} />
      <ol className="messages" data-testid="messages">
        {messages.map((m) => (
          <MessageView key={m.name} message={m} />
        ))}
        {pending
          .filter((m) => !messages.some((old) => old.name === m.name))
          .map((m) => (
            <MessageView key={m.name} message={m} />
          ))}
        {live && (
          <li className="message assistant live" data-testid="live-reply">
            <div className="role">assistant {streaming ? "(streaming…)" : "(last reply)"}</div>
            {streaming && (
              <div className="content" data-testid="streaming-reply">
                {live.text}
              </div>
            )}
            {streaming && live.toolCalls.map((call) => <ToolCallView key={call.id} call={call} />)}
            {streaming &&
              live.toolResults.map((result) => <ToolResultView key={result.toolCallId} result={result} />)}
            <div className="meta" data-testid="reply-meta">
              {live.finish !== undefined && (
                <>
                  finish: <strong data-testid="finish-reason">{enumName(FinishReason, live.finish)}</strong>{" "}
                </>
              )}
              {live.usage && (
                <span data-testid="usage">
                  usage: {live.usage.prompt} prompt + {live.usage.completion} completion tokens{" "}
                </span>
              )}
              {live.model && <small>{live.model}</small>}
            </div>
            <StatusBox status={live.error} />
          </li>
        )}
      </ol>
      {streamError && (
        <div data-testid="stream-error">
          {streamError.code === 1 ? <p className="note">Reply stopped.</p> : <ErrorBox error={streamError} />}
        </div>
      )}
      {waiting.length > 0 && (
        <div className="approvals" data-testid="approvals">
          <h3>Tool calls waiting for approval</h3>
          {waiting.map((call) => (
            <div key={call.id} className="row">
              <ToolCallView call={call} />
              <button onClick={() => stream({ approvals: [{ toolCallId: call.id, decision: ToolApprovalDecision.APPROVE }] })}>
                Approve
              </button>
              <button onClick={() => stream({ approvals: [{ toolCallId: call.id, decision: ToolApprovalDecision.DENY }] })}>
                Deny
              </button>
            </div>
          ))}
        </div>
      )}
      <div className="composer">
        <textarea
          data-testid="composer"
          rows={3}
          value={content}
          placeholder="Message (tool directives such as /call cortex.current_time {} work with the local provider)"
          onChange={(e) => setContent(e.target.value)}
        />
        {streaming ? (
          <button onClick={() => stop.current?.abort()} data-testid="stop">
            Stop
          </button>
        ) : (
          <button onClick={send} disabled={!content.trim()} data-testid="send">
            Send
          </button>
        )}
      </div>
    </div>
  );
}

function MessageView({ message }: { message: Message }) {
  const role = enumName(MessageRole, message.role).toLowerCase();
  return (
    <li className={`message ${role}`}>
      <div className="role">
        {role} <small>{when(message.createTime)}</small>
        {message.tokenCount > 0 && <small> · {message.tokenCount} tokens</small>}
        {message.finishReason !== FinishReason.UNSPECIFIED && <small> · finish {enumName(FinishReason, message.finishReason)}</small>}
        {message.model && <small> · {message.model}</small>}
      </div>
      {message.content && <div className="content">{message.content}</div>}
      {message.toolCalls.map((call) => (
        <ToolCallView key={call.id} call={call} />
      ))}
      {message.toolResult && <ToolResultView result={message.toolResult} />}
    </li>
  );
}

function ToolCallView({ call }: { call: ToolCall }) {
  return (
    <div className="tool-call" data-testid="tool-call">
      tool call <code>{call.tool}</code> <small>{enumName(ToolCallState, call.state)}</small>
      <Json value={call.arguments} />
    </div>
  );
}

function ToolResultView({ result }: { result: ToolResult }) {
  return (
    <div className="tool-result" data-testid="tool-result">
      result of <code>{result.tool}</code>
      {result.output && <Json value={result.output} />}
      <StatusBox status={result.error} />
    </div>
  );
}
