// The README's complete example, run in CI against a real server
// (tests/e2e/test_ts_client.py): sign in and refresh, read error details, stream a
// reply and cancel it, resume an event stream from its token, watch a task.
//
//   make run                                  # a server on 127.0.0.1:50051
//   node dist-examples/examples/quickstart.js [HOST:PORT]

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AuthService,
  ConversationService,
  CortexError,
  EventService,
  ExpertService,
  TokenSession,
  WorkspaceService,
  resumableEvents,
  tokensFrom,
} from "@cortex-core/client";
import { TaskState } from "@cortex-core/client/gen/cortex/experts/v1/task_pb.js";

const address = process.argv[2] ?? "127.0.0.1:50051";
// Backends talk gRPC (HTTP/2) to the server; a browser uses createGrpcWebTransport via Envoy.
const baseTransport = createGrpcTransport({ baseUrl: `http://${address}` });
const session = new TokenSession(baseTransport, {
  onChange: (tokens) => console.log(`tokens=${tokens ? "new" : "cleared"}`),
});
const transport = createGrpcTransport({
  baseUrl: `http://${address}`,
  interceptors: [session.interceptor],
});
const auth = createClient(AuthService, transport);

// 1. A refused registration: the field violations arrive decoded.
try {
  await auth.register({ email: "not-an-email", password: "x", displayName: "" });
} catch (error) {
  const failure = CortexError.from(error);
  console.log(`register=${failure.codeName} reason=${failure.reason}`);
  for (const violation of failure.fieldViolations) {
    console.log(`violation ${violation.field}: ${violation.description}`);
  }
}

// 2. Register, then refresh: the interceptor sends whichever token is current.
const email = `quickstart-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const registered = await auth.register({
  email,
  password: "correct horse battery staple 42",
  displayName: "Quickstart",
});
session.set(tokensFrom(registered));
await session.refresh();
const me = await auth.getCurrentUser({});
console.log(`user=${me.user?.email}`);

const workspaces = createClient(WorkspaceService, transport);
const workspace = (await workspaces.listWorkspaces({})).workspaces[0].name;

// 3. An event stream that resumes from its token (a saved token survives a restart).
const events = createClient(EventService, transport);
let savedToken = "";
const firstRun = new AbortController();
const seen: string[] = [];
const tail = (async () => {
  for await (const frame of resumableEvents(
    events,
    { workspaces: [workspace] },
    { signal: firstRun.signal, onResumeToken: (token) => (savedToken = token) },
  )) {
    if (frame.case === "event") seen.push(frame.value.id);
  }
})();

// 4. Stream a reply, cancel it after its first words.
const conversations = createClient(ConversationService, transport);
const { conversation } = await conversations.createConversation({
  parent: workspace,
  conversation: { title: "Quickstart" },
});
const stop = new AbortController();
let streamed = "";
try {
  for await (const response of conversations.sendMessage(
    { conversation: conversation!.name, content: "Tell me a long story about streams" },
    { signal: stop.signal },
  )) {
    if (response.frame.case === "delta") {
      streamed += response.frame.value.text;
      if (streamed.split(" ").length >= 3) stop.abort();
    }
    if (response.frame.case === "completion") {
      console.log(`finish=${response.frame.value.finishReason}`);
    }
  }
} catch (error) {
  console.log(`reply=${CortexError.from(error).codeName} after "${streamed}"`);
}

// 5. Watch a task until it ends.
const experts = createClient(ExpertService, transport);
const { task } = await experts.createTask({
  parent: workspace,
  task: { expert: "experts/echo", input: { text: "hello from the quickstart" } },
});
for await (const response of experts.watchTask({ name: task!.name })) {
  if (response.frame.case === "task") {
    const state = TaskState[response.frame.value.state];
    console.log(`task=${state}`);
    if (response.frame.value.state === TaskState.SUCCEEDED) {
      console.log(`output=${JSON.stringify(response.frame.value.output)}`);
      break;
    }
  }
}

// 6. Stop the tail, then resume from the saved token: the events in between are replayed.
await new Promise((resolve) => setTimeout(resolve, 500));
firstRun.abort();
await tail;
const beforeResume = seen.length;
await conversations.createConversation({ parent: workspace, conversation: { title: "Missed" } });
const resumed = new AbortController();
for await (const frame of resumableEvents(
  events,
  { workspaces: [workspace] },
  { resumeToken: savedToken, signal: resumed.signal },
)) {
  if (frame.case === "event") {
    const payload = frame.value.payload;
    if (payload.case === "conversationCreated" && payload.value.conversation?.title === "Missed") {
      console.log(`resumed=${payload.case} (${frame.value.id} was missed while no stream was open)`);
      resumed.abort();
    }
  }
  if (frame.case === "replayUnavailable") console.log("replay unavailable");
}
console.log(`events seen before the pause: ${beforeResume}`);

