// A SubscribeEvents stream that survives disconnects without losing or repeating
// an event. Every Event frame and every Heartbeat carries a resume token (the
// last delivered sequence per workspace, docs/events.md); when the stream ends
// or fails with a retryable error, it is opened again with the latest token, so
// the server replays exactly what was missed. When the server no longer has
// those events, the stream's first frame is a ReplayUnavailable, which is
// yielded like any other frame: the caller says so to its user. Save the token
// (`onResumeToken`) to resume after a restart or a page reload.
import { Code, type Client } from "@connectrpc/connect";
import type { EventType } from "./gen/cortex/events/v1/event_pb.js";
import {
  EventService,
  type SubscribeEventsResponse,
} from "./gen/cortex/events/v1/event_service_pb.js";
import { CortexError, isResumable } from "./errors.js";

export interface ResumableEventsOptions {
  /** Where to start: a token saved earlier. Without one, only new events come. */
  resumeToken?: string;
  /** Called with each new resume token (after every event and heartbeat). */
  onResumeToken?: (token: string) => void;
  /** Called before each reconnect, with the error that ended the previous stream. */
  onReconnect?: (error: CortexError | undefined, attempt: number) => void;
  /**
   * Called when the server ends the stream because the access token expired
   * (UNAUTHENTICATED / TOKEN_EXPIRED), before reconnecting: e.g. `() => session.refresh()`.
   * Without it the reconnect relies on the interceptor's refresh before expiry.
   */
  refresh?: () => Promise<unknown>;
  /** Ends the subscription (the generator then returns). */
  signal?: AbortSignal;
  /** First reconnect delay (default 250 ms), doubled per failed attempt up to maxDelayMs. */
  initialDelayMs?: number;
  /** Longest reconnect delay (default 10 s). */
  maxDelayMs?: number;
}

export type EventFrame = SubscribeEventsResponse["frame"];

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * Yields every frame of a workspace's (or conversation's) event stream,
 * reconnecting from the latest resume token until `signal` aborts, after every
 * failure `isResumable` accepts (a stream a proxy reset when its replica died, a
 * draining server, a slow subscriber ...). Others (PERMISSION_DENIED,
 * INVALID_ARGUMENT, INVALID_RESUME_TOKEN, ...) are thrown as CortexError.
 */
export async function* resumableEvents(
  client: Client<typeof EventService>,
  request: { workspaces?: string[]; conversation?: string; eventTypes?: EventType[] },
  options: ResumableEventsOptions = {},
): AsyncGenerator<EventFrame, void, undefined> {
  let token = options.resumeToken ?? "";
  let failures = 0;
  let expiredInARow = 0;
  const initial = options.initialDelayMs ?? 250;
  const maxDelay = options.maxDelayMs ?? 10_000;
  const advance = (next: string) => {
    if (next && next !== token) {
      token = next;
      options.onResumeToken?.(next);
    }
  };
  while (!options.signal?.aborted) {
    let ended: CortexError | undefined;
    try {
      const stream = client.subscribeEvents(
        { ...request, resumeToken: token },
        { signal: options.signal },
      );
      for await (const response of stream) {
        failures = 0;
        expiredInARow = 0;
        const frame = response.frame;
        if (frame.case === "event") advance(frame.value.resumeToken);
        if (frame.case === "heartbeat") advance(frame.value.resumeToken);
        yield frame;
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      ended = CortexError.from(error);
      // A slow subscriber is cut off with the token to continue from.
      const cutOff = ended.metadata["resume_token"];
      if (cutOff) advance(cutOff);
      // A stream outlives its access token: the server ends it at expiry. Reconnect at once
      // with a fresh token; a second expiry in a row (no new token to be had) is thrown.
      if (ended.code === Code.Unauthenticated && ended.reason === "TOKEN_EXPIRED") {
        expiredInARow += 1;
        if (expiredInARow > 1) throw ended;
        options.onReconnect?.(ended, failures + 1);
        await options.refresh?.();
        continue;
      }
      if (!cutOff && !isResumable(ended)) throw ended;
    }
    if (options.signal?.aborted) return;
    failures += 1;
    const backoff = Math.min(maxDelay, initial * 2 ** (failures - 1));
    options.onReconnect?.(ended, failures);
    await sleep(Math.max(backoff, ended?.retryDelayMs ?? 0), options.signal);
  }
}
