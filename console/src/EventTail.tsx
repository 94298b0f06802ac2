// A live tail of one workspace's events that survives a reload: the client
// package's resumableEvents reports each resume token, which is saved (with the
// events shown so far) in sessionStorage; a reloaded page resumes from it, so the
// server replays what happened while the page was away. When the server no
// longer has those events, it says so (ReplayUnavailable) and so does the page.
import { useEffect, useState } from "react";
import { resumableEvents, type CortexError } from "@cortex-core/client";
import { EventType, type Event } from "@cortex-core/client/gen/cortex/events/v1/event_pb.js";
import { events, session } from "./api";
import { enumName, ErrorBox, when } from "./util";

interface Row {
  id: string;
  sequence: string;
  type: string;
  time: string;
  actor: string;
  detail: string;
}

interface Saved {
  token: string;
  rows: Row[];
  gaps: string[];
}

const KEEP = 200;

function detailOf(event: Event): string {
  const payload = event.payload;
  switch (payload.case) {
    case "messageCreated":
      return payload.value.message?.content.slice(0, 80) ?? "";
    case "conversationCreated":
    case "conversationUpdated":
      return payload.value.conversation?.title ?? "";
    case "memoryCreated":
      return payload.value.memory?.content.slice(0, 80) ?? "";
    case "taskStateChanged":
      return `${payload.value.task?.name.split("/").pop()} → state ${payload.value.task?.state}`;
    case "replyDelta":
      return payload.value.text;
    case "toolCallRequested":
      return payload.value.toolCall?.tool ?? "";
    case undefined:
      return "";
    default:
      return JSON.stringify(payload.value, (_k, v) => (typeof v === "bigint" ? String(v) : v)).slice(0, 80);
  }
}

export function EventTail({ workspace }: { workspace: string }) {
  const key = `cortex.events.${workspace}`;
  const [saved, setSaved] = useState<Saved>(() => {
    try {
      return (JSON.parse(sessionStorage.getItem(key) ?? "") as Saved) ?? { token: "", rows: [], gaps: [] };
    } catch {
      return { token: "", rows: [], gaps: [] };
    }
  });
  const [status, setStatus] = useState("connecting");
  const [error, setError] = useState<CortexError>();
  const [hideDeltas, setHideDeltas] = useState(true);
  const [epoch, setEpoch] = useState(0);

  useEffect(() => {
    const controller = new AbortController();
    let state: Saved = saved;
    const persist = (next: Saved) => {
      state = next;
      sessionStorage.setItem(key, JSON.stringify(next));
      setSaved(next);
    };
    (async () => {
      try {
        for await (const frame of resumableEvents(
          events,
          { workspaces: [workspace] },
          {
            resumeToken: state.token || undefined,
            signal: controller.signal,
            refresh: () => session.refresh(),
            onReconnect: (failure) => setStatus(`reconnecting (${failure?.codeName ?? "stream ended"})`),
          },
        )) {
          setStatus("live");
          if (frame.case === "event") {
            const e = frame.value;
            const row: Row = {
              id: e.id,
              sequence: String(e.sequence),
              type: enumName(EventType, e.type),
              time: when(e.createTime),
              actor: e.actor,
              detail: detailOf(e),
            };
            persist({ ...state, token: e.resumeToken, rows: [...state.rows, row].slice(-KEEP) });
          } else if (frame.case === "heartbeat") {
            persist({ ...state, token: frame.value.resumeToken });
          } else if (frame.case === "replayUnavailable") {
            const gap = frame.value;
            persist({
              ...state,
              gaps: [
                ...state.gaps,
                `Replay unavailable: events after #${gap.requestedSequence} up to #${String(gap.oldestAvailableSequence - 1n)} are no longer kept; continuing from #${gap.oldestAvailableSequence}.`,
              ],
            });
          }
        }
      } catch (failure) {
        setError(failure as CortexError);
        setStatus("stopped");
      }
    })();
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [workspace, epoch]);

  function forget() {
    sessionStorage.removeItem(key);
    setSaved({ token: "", rows: [], gaps: [] });
    setEpoch((n) => n + 1);
  }
  const rows = hideDeltas ? saved.rows.filter((r) => r.type !== "REPLY_DELTA") : saved.rows;
  return (
    <section>
      <div className="row">
        <h2>Events</h2>
        <span data-testid="tail-status" className="status">
          {status}
        </span>
        <label>
          <input type="checkbox" checked={hideDeltas} onChange={(e) => setHideDeltas(e.target.checked)} /> hide reply deltas
        </label>
        <button onClick={forget}>Forget position</button>
      </div>
      <p className="hint">
        Resume token: <code data-testid="resume-token">{saved.token ? `${saved.token.slice(0, 24)}…` : "none (live only)"}</code>
      </p>
      {saved.gaps.map((gap) => (
        <div key={gap} className="warning" data-testid="replay-unavailable">
          {gap}
        </div>
      ))}
      <ErrorBox error={error} />
      <table data-testid="events">
        <thead>
          <tr>
            <th>#</th>
            <th>type</th>
            <th>time</th>
            <th>actor</th>
            <th>detail</th>
          </tr>
        </thead>
        <tbody>
          {[...rows].reverse().map((r) => (
            <tr key={r.id} data-testid="event-row" data-event-id={r.id}>
              <td>{r.sequence}</td>
              <td>{r.type}</td>
              <td>{r.time}</td>
              <td>
                <code>{r.actor}</code>
              </td>
              <td>{r.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
