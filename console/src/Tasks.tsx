import { useEffect, useState } from "react";
import { Code } from "@connectrpc/connect";
import { CortexError, isRetryable } from "@cortex-core/client";
import { TaskState, type Task } from "@cortex-core/client/gen/cortex/experts/v1/task_pb.js";
import type { ToolCall, ToolResult } from "@cortex-core/client/gen/cortex/context/v1/message_pb.js";
import { experts } from "./api";
import { SchemaForm } from "./SchemaForm";
import { enumName, ErrorBox, Json, StatusBox, useAction, useLoad, when } from "./util";

const FINISHED = new Set([TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED]);

export function Tasks({ workspace }: { workspace: string }) {
  const expertList = useLoad(async () => (await experts.listExperts({ pageSize: 100 })).experts, []);
  const taskList = useLoad(async () => (await experts.listTasks({ parent: workspace, pageSize: 50 })).tasks, [workspace]);
  const [expertName, setExpertName] = useState("");
  const [watching, setWatching] = useState<string>();
  const { error, busy, run } = useAction();
  const expert = expertList.data?.find((e) => e.name === expertName) ?? expertList.data?.[0];

  async function create(input: Record<string, unknown>) {
    if (!expert) return;
    const made = await run(() =>
      experts.createTask({ parent: workspace, task: { expert: expert.name, input: input as never }, requestId: crypto.randomUUID() }),
    );
    if (made?.task) {
      taskList.reload();
      setWatching(made.task.name);
    }
  }
  return (
    <div className="split">
      <aside>
        <h2>Experts</h2>
        <ErrorBox error={expertList.error} />
        <select data-testid="expert-select" value={expert?.name ?? ""} onChange={(e) => setExpertName(e.target.value)}>
          {expertList.data?.map((e) => (
            <option key={e.name} value={e.name}>
              {e.displayName || e.name}
            </option>
          ))}
        </select>
        {expert && (
          <>
            <p>{expert.description}</p>
            <small>
              tools: {expert.tools.join(", ") || "none"} · max attempts {expert.defaultMaxAttempts} · max steps {expert.maxSteps}
            </small>
            <SchemaForm key={expert.name} schema={expert.inputSchema} submitLabel="Create task" onSubmit={create} busy={busy} testId="task-form" />
          </>
        )}
        <ErrorBox error={error} />
        <h2>Tasks</h2>
        <ErrorBox error={taskList.error} />
        <ul className="pick" data-testid="task-list">
          {taskList.data?.map((t) => (
            <li key={t.name} className={t.name === watching ? "selected" : ""} onClick={() => setWatching(t.name)}>
              {t.expert.split("/").pop()} <small>{enumName(TaskState, t.state)}</small> <small>{when(t.createTime)}</small>
            </li>
          ))}
        </ul>
      </aside>
      <section>{watching ? <TaskWatch key={watching} name={watching} onChanged={taskList.reload} /> : <p>Create or pick a task.</p>}</section>
    </div>
  );
}

interface Progress {
  fraction: number;
  message: string;
}

function TaskWatch({ name, onChanged }: { name: string; onChanged: () => void }) {
  const [task, setTask] = useState<Task>();
  const [output, setOutput] = useState("");
  const [progress, setProgress] = useState<Progress>();
  const [calls, setCalls] = useState<ToolCall[]>([]);
  const [results, setResults] = useState<ToolResult[]>([]);
  const [watchError, setWatchError] = useState<CortexError>();
  const [pruned, setPruned] = useState<string>();
  const { error, busy, run } = useAction();

  useEffect(() => {
    const controller = new AbortController();
    (async () => {
      // The task as it is now, then its whole journal after the first frame (the creation
      // snapshot): output streamed before the page opened is replayed too. A watch that
      // ends early (a dropped connection, a draining server, an expired access token) is
      // opened again after the last sequence it delivered.
      let after = 1n;
      try {
        const now = await experts.getTask({ name }, { signal: controller.signal });
        setTask(now.task);
      } catch (failure) {
        if (!controller.signal.aborted) setWatchError(CortexError.from(failure));
        return;
      }
      while (!controller.signal.aborted) {
        try {
          for await (const response of experts.watchTask({ name, afterSequence: after }, { signal: controller.signal })) {
            if (response.sequence > 0n) after = response.sequence;
            const frame = response.frame;
            if (frame.case === "task") {
              setTask(frame.value);
              if (FINISHED.has(frame.value.state)) onChanged();
            } else if (frame.case === "outputDelta") setOutput((text) => text + frame.value.text);
            else if (frame.case === "progress") setProgress({ fraction: frame.value.fraction, message: frame.value.message });
            else if (frame.case === "toolCall") setCalls((old) => [...old, frame.value]);
            else if (frame.case === "toolResult") setResults((old) => [...old, frame.value]);
            else if (frame.case === "journalPruned") setPruned(`journal pruned before #${frame.value.oldestSequence}`);
          }
          return; // the server closes the watch after the terminal state
        } catch (failure) {
          if (controller.signal.aborted) return;
          const error = CortexError.from(failure);
          const expired = error.code === Code.Unauthenticated && error.reason === "TOKEN_EXPIRED";
          if (!expired && !isRetryable(error)) {
            setWatchError(error);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, Math.max(500, error.retryDelayMs ?? 0)));
        }
      }
    })();
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [name]);

  const state = task ? enumName(TaskState, task.state) : "…";
  const request = task?.state === TaskState.INPUT_REQUIRED ? task.inputRequest : undefined;
  return (
    <div className="task" data-testid="task-watch">
      <div className="row">
        <h2>
          Task <code>{name.split("/").pop()}</code>
        </h2>
        <span className={`state ${state.toLowerCase()}`} data-testid="task-state">
          {state}
        </span>
        {task && !FINISHED.has(task.state) && (
          <button onClick={() => run(() => experts.cancelTask({ name }))} data-testid="task-cancel">
            Cancel
          </button>
        )}
      </div>
      <ErrorBox error={watchError ?? error} />
      {task && (
        <p>
          expert <code>{task.expert}</code> · attempt {task.attemptCount}/{task.maxAttempts} · created {when(task.createTime)}
          {task.completeTime && <> · completed {when(task.completeTime)}</>}
        </p>
      )}
      {pruned && <div className="warning">{pruned}</div>}
      {progress && (
        <div>
          <progress value={progress.fraction} max={1} /> {progress.message}
        </div>
      )}
      <h3>Input</h3>
      <Json value={task?.input} />
      <h3>Streamed output</h3>
      <pre className="output" data-testid="task-output">
        {output}
      </pre>
      {calls.map((call) => (
        <div key={call.id} className="tool-call">
          tool call <code>{call.tool}</code>
          <Json value={call.arguments} />
        </div>
      ))}
      {results.map((result) => (
        <div key={result.toolCallId} className="tool-result">
          result of <code>{result.tool}</code>
          {result.output && <Json value={result.output} />}
          <StatusBox status={result.error} />
        </div>
      ))}
      {request && (
        <div className="input-request" data-testid="input-request">
          <h3>The expert asks: {request.message}</h3>
          <small>answer by {when(request.expireTime)}</small>
          <SchemaForm
            schema={request.answerSchema}
            submitLabel="Answer"
            busy={busy}
            testId="answer-form"
            onSubmit={(input) => run(() => experts.provideTaskInput({ name, inputRequestId: request.id, input }))}
          />
        </div>
      )}
      {task?.output && (
        <>
          <h3>Output</h3>
          <Json value={task.output} />
        </>
      )}
      <StatusBox status={task?.error} />
      {task && task.attempts.length > 0 && (
        <>
          <h3>Attempts</h3>
          <ol>
            {task.attempts.map((attempt) => (
              <li key={attempt.attempt}>
                {when(attempt.startTime)} – {when(attempt.endTime)} <StatusBox status={attempt.error} />
              </li>
            ))}
          </ol>
        </>
      )}
    </div>
  );
}
