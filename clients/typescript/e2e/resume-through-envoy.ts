// resumableEvents through Envoy while the server behind it is SIGKILLed and started again
// on the same port. Driven by tests/e2e/test_ts_client.py, line by line:
//   node dist-examples/e2e/resume-through-envoy.js ENVOY_HOST:PORT SERVER_HOST:PORT
// prints `subscribed` once an event arrived through Envoy, then waits for `restarted` on
// stdin, creates one more memory (directly on the server) and prints `reconnect=<CODE>` for
// each failure it resumed after and `resumed=<content>` for the memory seen after the kill.
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  AuthService,
  EventService,
  MemoryService,
  TokenSession,
  WorkspaceService,
  resumableEvents,
  tokensFrom,
} from "@cortex-core/client";
import { MemoryKind } from "@cortex-core/client/gen/cortex/context/v1/memory_pb.js";

const [envoyAddress, serverAddress] = process.argv.slice(2);
if (!envoyAddress || !serverAddress) throw new Error("usage: ENVOY_HOST:PORT SERVER_HOST:PORT");
const direct = `http://${serverAddress}`;
const registered = await createClient(AuthService, createGrpcTransport({ baseUrl: direct })).register({
  email: `envoy-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.com`,
  password: "correct horse battery staple 42",
  displayName: "Envoy",
});
const session = new TokenSession(createGrpcTransport({ baseUrl: direct }), { tokens: tokensFrom(registered) });
const onServer = createGrpcTransport({ baseUrl: direct, interceptors: [session.interceptor] });
const throughEnvoy = createGrpcTransport({ baseUrl: `http://${envoyAddress}`, interceptors: [session.interceptor] });
const workspace = (await createClient(WorkspaceService, onServer).listWorkspaces({})).workspaces[0].name;
const memories = createClient(MemoryService, onServer);
const remember = (content: string) =>
  memories.createMemory({ parent: workspace, memory: { content, kind: MemoryKind.NOTE } });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const done = new AbortController();
let subscribed = false;
const feeding = (async () => {
  while (!subscribed) {  // the stream starts live: write until one arrives
    await remember("before");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
})();
for await (const frame of resumableEvents(
  createClient(EventService, throughEnvoy),
  { workspaces: [workspace] },
  {
    signal: done.signal,
    initialDelayMs: 50,
    maxDelayMs: 500,
    onReconnect: (failure) => console.log(`reconnect=${failure?.codeName ?? "OK"}`),
  },
)) {
  if (frame.case !== "event" || frame.value.payload.case !== "memoryCreated") continue;
  const content = frame.value.payload.value.memory?.content ?? "";
  if (!subscribed) {
    subscribed = true;
    await feeding;
    console.log("subscribed");
    const next = await lines.next();
    if (next.value !== "restarted") throw new Error(`expected "restarted", got ${next.value}`);
    await remember("after-kill");
  } else if (content === "after-kill") {
    console.log(`resumed=${content}`);
    done.abort();
  }
}
