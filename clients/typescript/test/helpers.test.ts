// The helpers against a real server (CORTEX_ADDRESS=HOST:PORT) whose access tokens last
// 3 s (CORTEX_ACCESS_TOKEN_TTL=3) and whose event streams beat every second
// (CORTEX_EVENTS_HEARTBEAT=1), with node's test runner:
//   node --test dist-examples/test/
// Run by tests/e2e/test_ts_client.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AuthService,
  CortexError,
  EventService,
  MemoryService,
  TokenSession,
  WorkspaceService,
  isResumable,
  resumableEvents,
  tokensFrom,
  type Tokens,
} from "@cortex-core/client";
import { MemoryKind } from "@cortex-core/client/gen/cortex/context/v1/memory_pb.js";
import { ErrorInfoSchema } from "@cortex-core/client/gen/google/rpc/error_details_pb.js";
import { create } from "@bufbuild/protobuf";

const address = process.env.CORTEX_ADDRESS;
if (!address) throw new Error("set CORTEX_ADDRESS=HOST:PORT");
const baseUrl = `http://${address}`;
const plain = createGrpcTransport({ baseUrl });

async function signedIn(options: { interceptors?: Interceptor[] } = {}) {
  const seen: (Tokens | undefined)[] = [];
  const registered = await createClient(AuthService, plain).register({
    email: `helpers-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.com`,
    password: "correct horse battery staple 42",
    displayName: "Helpers",
  });
  const session = new TokenSession(plain, {
    tokens: tokensFrom(registered),
    onChange: (tokens) => seen.push(tokens),
  });
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [session.interceptor, ...(options.interceptors ?? [])],
  });
  return { session, seen, transport, registered };
}

test("an access token about to expire is refreshed before the call, once for concurrent calls", async () => {
  const { session, seen, transport, registered } = await signedIn();
  session.set({ ...session.tokens!, accessTokenExpiresAt: Date.now() + 1_000 });
  seen.length = 0;
  const auth = createClient(AuthService, transport);

  const users = await Promise.all([auth.getCurrentUser({}), auth.getCurrentUser({}), auth.getCurrentUser({})]);

  assert.deepEqual(new Set(users.map((r) => r.user?.email)), new Set([registered.user?.email]));
  assert.equal(seen.length, 1, "one refresh for three calls");
  assert.notEqual(seen[0]?.refreshToken, registered.refreshToken, "the refresh token rotated");
});

test("a unary call refused UNAUTHENTICATED is refreshed and retried once", async () => {
  const { session, seen, transport, registered } = await signedIn();
  // No known expiry, so nothing is refreshed before the call: the refusal triggers it.
  session.set({ ...session.tokens!, accessToken: "not-a-token", accessTokenExpiresAt: undefined });
  seen.length = 0;

  const me = await createClient(AuthService, transport).getCurrentUser({});

  assert.equal(me.user?.email, registered.user?.email);
  assert.equal(seen.length, 1);
});

test("a revoked session clears the tokens and the call fails UNAUTHENTICATED", async () => {
  const { session, seen, transport } = await signedIn();
  await createClient(AuthService, transport).logout({});
  session.set({ ...session.tokens!, accessTokenExpiresAt: Date.now() });

  await assert.rejects(createClient(AuthService, transport).getCurrentUser({}), (error) => {
    const failure = CortexError.from(error);
    assert.equal(failure.codeName, "UNAUTHENTICATED");
    assert.ok(failure.reason, "an ErrorInfo reason");
    return true;
  });
  assert.equal(seen.at(-1), undefined);
  assert.equal(session.tokens, undefined);
});

test("CortexError decodes BadRequest field violations", async () => {
  const { transport } = await signedIn();
  const workspace = (await createClient(WorkspaceService, transport).listWorkspaces({})).workspaces[0].name;

  const error = await createClient(MemoryService, transport)
    .createMemory({ parent: workspace, memory: { content: "", kind: MemoryKind.FACT } })
    .catch((caught: unknown) => CortexError.from(caught));

  assert.ok(error instanceof CortexError);
  assert.equal(error.code, Code.InvalidArgument);
  assert.ok(error.violation("memory.content"), JSON.stringify(error.fieldViolations));
});

test("isResumable: transport failures (a proxy's RST_STREAM) resume, the server's own errors only for retryable reasons", () => {
  const transport = (code: Code, message: string) => CortexError.from(new ConnectError(message, code));
  const server = (code: Code, reason: string) =>
    new CortexError(code, "from the server", { errorInfo: create(ErrorInfoSchema, { reason, domain: "cortex" }) });
  const resumed = [
    // What connect-node reports when Envoy resets a stream whose replica was killed.
    transport(Code.Internal, "Stream closed with error code NGHTTP2_INTERNAL_ERROR"),
    transport(Code.Unavailable, "connect ECONNREFUSED"),
    transport(Code.Unknown, "stream removed"),
    server(Code.Unavailable, "SERVER_SHUTTING_DOWN"),
    server(Code.ResourceExhausted, "SUBSCRIBER_TOO_SLOW"),
    server(Code.Unauthenticated, "TOKEN_EXPIRED"),
  ];
  const raised = [
    server(Code.Internal, "INTERNAL"),
    server(Code.InvalidArgument, "INVALID_RESUME_TOKEN"),
    server(Code.PermissionDenied, "PERMISSION_DENIED"),
    server(Code.NotFound, "TASK_NOT_FOUND"),
    server(Code.Unauthenticated, "SESSION_REVOKED"),
    transport(Code.DeadlineExceeded, "the caller's own deadline"),
    transport(Code.InvalidArgument, "bad"),
  ];

  assert.deepEqual(resumed.filter((error) => !isResumable(error)).map(String), []);
  assert.deepEqual(raised.filter((error) => isResumable(error)).map(String), []);
});

test("resumableEvents reconnects from its token after a dropped stream: nothing lost, nothing twice", async () => {
  // Every stream ends with UNAVAILABLE after its second event, as a dropped connection would.
  const dropAfterTwo: Interceptor = (next) => async (request) => {
    const response = await next(request);
    if (!response.stream) return response;
    const messages = response.message;
    return {
      ...response,
      message: (async function* () {
        let events = 0;
        for await (const message of messages) {
          yield message;
          if ((message as { frame?: { case?: string } }).frame?.case === "event" && ++events === 2) {
            throw new ConnectError("dropped by the test", Code.Unavailable);
          }
        }
      })(),
    };
  };
  const { transport } = await signedIn({ interceptors: [dropAfterTwo] });
  const workspace = (await createClient(WorkspaceService, transport).listWorkspaces({})).workspaces[0].name;
  const memories = createClient(MemoryService, transport);
  // A token from before the memories: the first heartbeat of a live tail (the test server
  // sends one a second).
  const events = createClient(EventService, transport);
  const live = new AbortController();
  let token = "";
  for await (const frame of resumableEvents(events, { workspaces: [workspace] }, { signal: live.signal })) {
    if (frame.case === "heartbeat") {
      token = frame.value.resumeToken;
      live.abort();
    }
  }
  assert.ok(token, "a heartbeat brought a resume token");
  const contents = ["one", "two", "three", "four", "five"];
  for (const content of contents) {
    await memories.createMemory({ parent: workspace, memory: { content, kind: MemoryKind.NOTE } });
  }
  const replayFrom = new AbortController();
  const got: string[] = [];
  let reconnects = 0;
  for await (const frame of resumableEvents(
    events,
    { workspaces: [workspace] },
    {
      resumeToken: token,
      signal: replayFrom.signal,
      initialDelayMs: 10,
      onReconnect: (failure) => {
        assert.equal(failure?.codeName, "UNAVAILABLE");
        reconnects += 1;
      },
    },
  )) {
    if (frame.case === "event" && frame.value.payload.case === "memoryCreated") {
      got.push(frame.value.payload.value.memory?.content ?? "");
      if (got.length === contents.length) replayFrom.abort();
    }
  }

  assert.deepEqual(got, contents);
  assert.ok(reconnects >= 2, `reconnected ${reconnects} times`);
});


test("resumableEvents outlives its access token: the server ends the stream, it refreshes and resumes", async () => {
  const { session, transport } = await signedIn();
  // No known expiry: only the server's TOKEN_EXPIRED tells that the token is gone.
  session.set({ ...session.tokens!, accessTokenExpiresAt: undefined });
  const workspace = (await createClient(WorkspaceService, transport).listWorkspaces({})).workspaces[0].name;
  const memories = createClient(MemoryService, transport);
  const stop = new AbortController();
  const reasons: string[] = [];
  let remembered = false;
  let got = "";
  for await (const frame of resumableEvents(
    createClient(EventService, transport),
    { workspaces: [workspace] },
    {
      signal: stop.signal,
      refresh: () => session.refresh(),
      onReconnect: (failure) => reasons.push(failure?.reason ?? ""),
    },
  )) {
    // Once the stream has been ended at expiry and reopened, something happens.
    if (frame.case === "heartbeat" && reasons.includes("TOKEN_EXPIRED") && !remembered) {
      remembered = true;
      await memories.createMemory({ parent: workspace, memory: { content: "after expiry", kind: MemoryKind.NOTE } });
    }
    if (frame.case === "event" && frame.value.payload.case === "memoryCreated") {
      got = frame.value.payload.value.memory?.content ?? "";
      stop.abort();
    }
  }

  assert.equal(got, "after expiry");
  assert.deepEqual(reasons, ["TOKEN_EXPIRED"]);
});
