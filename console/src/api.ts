// One gRPC-Web transport on the page's own origin (Envoy serves the console and
// the API together, so no CORS), with the access token attached and refreshed by
// the client package's TokenSession. Tokens live in localStorage so a reload
// stays signed in.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  AuthService,
  ContextService,
  ConversationService,
  EventService,
  ExpertService,
  MemoryService,
  SessionService,
  TokenSession,
  ToolService,
  WorkspaceService,
  type Tokens,
} from "@cortex-core/client";

const TOKENS_KEY = "cortex.tokens";
// Served by `make console`, page and API share the origin. With Vite's dev server
// (`VITE_CORTEX_URL=http://127.0.0.1:8080 npm run dev`, an origin Envoy's CORS allows)
// the API is Envoy's address.
const baseUrl = import.meta.env.VITE_CORTEX_URL || window.location.origin;

function loadTokens(): Tokens | undefined {
  try {
    const raw = localStorage.getItem(TOKENS_KEY);
    return raw ? (JSON.parse(raw) as Tokens) : undefined;
  } catch {
    return undefined;
  }
}

type Listener = (tokens: Tokens | undefined) => void;
const listeners = new Set<Listener>();

export function onTokens(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export const session = new TokenSession(createGrpcWebTransport({ baseUrl }), {
  tokens: loadTokens(),
  onChange: (tokens) => {
    if (tokens) localStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
    else localStorage.removeItem(TOKENS_KEY);
    for (const listener of listeners) listener(tokens);
  },
});

const transport = createGrpcWebTransport({ baseUrl, interceptors: [session.interceptor] });

export const auth = createClient(AuthService, transport);
export const sessions = createClient(SessionService, transport);
export const workspaces = createClient(WorkspaceService, transport);
export const conversations = createClient(ConversationService, transport);
export const contexts = createClient(ContextService, transport);
export const memories = createClient(MemoryService, transport);
export const events = createClient(EventService, transport);
export const experts = createClient(ExpertService, transport);
export const tools = createClient(ToolService, transport);
