import type { User } from "@cortex-core/client/gen/cortex/auth/v1/user_pb.js";
import { session, sessions } from "./api";
import { ErrorBox, useAction, useLoad, when } from "./util";

export function Sessions({ user }: { user: User | undefined }) {
  const list = useLoad(
    async () => (user ? (await sessions.listSessions({ parent: user.name, pageSize: 100 })).sessions : []),
    [user?.name],
  );
  const { error, run } = useAction();
  async function revoke(name: string, current: boolean) {
    await run(() => sessions.revokeSession({ name }));
    if (current) session.clear();
    else list.reload();
  }
  return (
    <section>
      <h2>Sessions</h2>
      <ErrorBox error={list.error ?? error} />
      <table data-testid="sessions">
        <thead>
          <tr>
            <th>session</th>
            <th>client</th>
            <th>created</th>
            <th>last used</th>
            <th>expires</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {list.data?.map((s) => (
            <tr key={s.name}>
              <td>
                <code>{s.name.split("/").pop()}</code> {s.current && <strong>(this one)</strong>}
              </td>
              <td>
                {s.clientAddress} <small>{s.userAgent}</small>
              </td>
              <td>{when(s.createTime)}</td>
              <td>{when(s.lastUseTime)}</td>
              <td>{when(s.expireTime)}</td>
              <td>
                <button onClick={() => revoke(s.name, s.current)}>Revoke</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
