import { useEffect, useState } from "react";
import type { User } from "@cortex-core/client/gen/cortex/auth/v1/user_pb.js";
import { WorkspaceRole } from "@cortex-core/client/gen/cortex/sessions/v1/workspace_pb.js";
import { auth, onTokens, session, workspaces } from "./api";
import { SignIn } from "./SignIn";
import { Sessions } from "./Sessions";
import { Workspaces } from "./Workspaces";
import { Conversations } from "./Conversations";
import { Memories } from "./Memories";
import { EventTail } from "./EventTail";
import { Tasks } from "./Tasks";
import { Tools } from "./Tools";
import { enumName, ErrorBox, useLoad } from "./util";

const TABS = ["conversations", "memories", "events", "tasks", "tools", "workspaces", "sessions"] as const;
type Tab = (typeof TABS)[number];
const WORKSPACE_KEY = "cortex.workspace";

function tabFromHash(): Tab {
  const name = window.location.hash.replace(/^#\/?/, "").split("/")[0];
  return (TABS as readonly string[]).includes(name) ? (name as Tab) : "conversations";
}

export function App() {
  const [signedIn, setSignedIn] = useState(session.tokens !== undefined);
  useEffect(() => onTokens((tokens) => setSignedIn(tokens !== undefined)), []);
  return signedIn ? <Console /> : <SignIn />;
}

function Console() {
  const [tab, setTab] = useState<Tab>(tabFromHash);
  useEffect(() => {
    const listener = () => setTab(tabFromHash());
    window.addEventListener("hashchange", listener);
    return () => window.removeEventListener("hashchange", listener);
  }, []);
  const [user, setUser] = useState<User>();
  useEffect(() => {
    auth.getCurrentUser({}).then((r) => setUser(r.user), () => undefined);
  }, []);
  const list = useLoad(() => workspaces.listWorkspaces({ pageSize: 100 }), []);
  const [workspace, setWorkspace] = useState(localStorage.getItem(WORKSPACE_KEY) ?? "");
  const known = list.data?.workspaces ?? [];
  useEffect(() => {
    if (known.length > 0 && !known.some((w) => w.name === workspace)) choose(known[0].name);
  }, [list.data]);
  function choose(name: string) {
    localStorage.setItem(WORKSPACE_KEY, name);
    setWorkspace(name);
  }
  async function signOut() {
    try {
      await auth.logout({});
    } finally {
      session.clear();
    }
  }
  const current = known.find((w) => w.name === workspace);
  return (
    <div className="console">
      <header>
        <strong>Cortex console</strong>
        <label>
          workspace{" "}
          <select data-testid="workspace-select" value={workspace} onChange={(e) => choose(e.target.value)}>
            {known.map((w) => (
              <option key={w.name} value={w.name}>
                {w.displayName} ({enumName(WorkspaceRole, w.callerRole)})
              </option>
            ))}
          </select>
        </label>
        <span className="user" data-testid="current-user">
          {user?.displayName} &lt;{user?.email}&gt;
        </span>
        <button onClick={signOut}>Sign out</button>
      </header>
      <nav>
        {TABS.map((name) => (
          <a key={name} href={`#/${name}`} className={name === tab ? "active" : ""} data-testid={`tab-${name}`}>
            {name}
          </a>
        ))}
      </nav>
      <ErrorBox error={list.error} />
      <main>
        {!workspace && tab !== "sessions" && tab !== "workspaces" ? (
          <p>Loading workspaces…</p>
        ) : tab === "conversations" ? (
          <Conversations key={workspace} workspace={workspace} />
        ) : tab === "memories" ? (
          <Memories key={workspace} workspace={workspace} />
        ) : tab === "events" ? (
          <EventTail key={workspace} workspace={workspace} />
        ) : tab === "tasks" ? (
          <Tasks key={workspace} workspace={workspace} />
        ) : tab === "tools" ? (
          <Tools workspace={workspace} />
        ) : tab === "workspaces" ? (
          <Workspaces current={current} all={known} onChanged={list.reload} onChoose={choose} />
        ) : (
          <Sessions user={user} />
        )}
      </main>
    </div>
  );
}
