import { useState } from "react";
import { WorkspaceRole, type Workspace } from "@cortex-core/client/gen/cortex/sessions/v1/workspace_pb.js";
import { workspaces } from "./api";
import { enumName, ErrorBox, useAction, useLoad, when } from "./util";

const ROLES = [WorkspaceRole.OWNER, WorkspaceRole.EDITOR, WorkspaceRole.VIEWER];

export function Workspaces({
  current,
  all,
  onChanged,
  onChoose,
}: {
  current: Workspace | undefined;
  all: Workspace[];
  onChanged: () => void;
  onChoose: (name: string) => void;
}) {
  const [displayName, setDisplayName] = useState("");
  const [email, setEmail] = useState("");
  const [role, setRole] = useState(WorkspaceRole.EDITOR);
  const { error, run } = useAction();
  const members = useLoad(
    async () => (current ? (await workspaces.listWorkspaceMembers({ parent: current.name, pageSize: 100 })).members : []),
    [current?.name],
  );
  async function create() {
    const made = await run(() => workspaces.createWorkspace({ workspace: { displayName } }));
    if (made?.workspace) {
      setDisplayName("");
      onChanged();
      onChoose(made.workspace.name);
    }
  }
  async function add() {
    if (current && (await run(() => workspaces.addWorkspaceMember({ parent: current.name, email, role })))) {
      setEmail("");
      members.reload();
    }
  }
  async function remove(memberEmail: string) {
    if (current && (await run(() => workspaces.removeWorkspaceMember({ parent: current.name, email: memberEmail })))) {
      members.reload();
    }
  }
  return (
    <section>
      <h2>Workspaces</h2>
      <ErrorBox error={error ?? members.error} />
      <table>
        <thead>
          <tr>
            <th>name</th>
            <th>your role</th>
            <th>tokens used (prompt / completion)</th>
            <th>budget</th>
            <th>created</th>
          </tr>
        </thead>
        <tbody>
          {all.map((w) => (
            <tr key={w.name} className={w.name === current?.name ? "selected" : ""} onClick={() => onChoose(w.name)}>
              <td>{w.displayName}</td>
              <td>{enumName(WorkspaceRole, w.callerRole)}</td>
              <td>
                {String(w.promptTokenCount)} / {String(w.completionTokenCount)}
              </td>
              <td>{w.tokenBudget ? String(w.tokenBudget) : "none"}</td>
              <td>{when(w.createTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="row">
        <input placeholder="new workspace name" data-testid="new-workspace-name" value={displayName} onChange={(e) => setDisplayName(e.target.value)} />
        <button onClick={create} data-testid="create-workspace">
          Create workspace
        </button>
      </div>
      {current && (
        <>
          <h3>Members of {current.displayName}</h3>
          <table data-testid="members">
            <thead>
              <tr>
                <th>member</th>
                <th>role</th>
                <th>since</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {members.data?.map((m) => (
                <tr key={m.name}>
                  <td>
                    {m.displayName} &lt;{m.email}&gt;
                  </td>
                  <td>{enumName(WorkspaceRole, m.role)}</td>
                  <td>{when(m.createTime)}</td>
                  <td>
                    <button onClick={() => remove(m.email)}>Remove</button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <div className="row">
            <input placeholder="email" data-testid="member-email" value={email} onChange={(e) => setEmail(e.target.value)} />
            <select value={role} onChange={(e) => setRole(Number(e.target.value))}>
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {enumName(WorkspaceRole, r)}
                </option>
              ))}
            </select>
            <button onClick={add} data-testid="add-member">
              Add member
            </button>
          </div>
        </>
      )}
    </section>
  );
}
