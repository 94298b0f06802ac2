import { useState } from "react";
import { MemoryKind, type Memory } from "@cortex-core/client/gen/cortex/context/v1/memory_pb.js";
import { memories } from "./api";
import { enumName, ErrorBox, useAction, useLoad, when } from "./util";

const KINDS = [MemoryKind.FACT, MemoryKind.PREFERENCE, MemoryKind.ENTITY, MemoryKind.NOTE];

export function Memories({ workspace }: { workspace: string }) {
  const [query, setQuery] = useState("");
  const [searched, setSearched] = useState("");
  const list = useLoad(async (): Promise<{ memory: Memory; score?: number }[]> => {
    if (searched) {
      const found = await memories.searchMemories({ parent: workspace, query: searched, pageSize: 50 });
      return found.results.map((r) => ({ memory: r.memory!, score: r.score }));
    }
    const all = await memories.listMemories({ parent: workspace, pageSize: 100 });
    return all.memories.map((memory) => ({ memory }));
  }, [workspace, searched]);
  const [content, setContent] = useState("");
  const [kind, setKind] = useState(MemoryKind.FACT);
  const [ttl, setTtl] = useState("");
  const { error, run } = useAction();

  async function create() {
    const seconds = Number(ttl);
    const made = await run(() =>
      memories.createMemory({
        parent: workspace,
        memory: { content, kind, ttl: ttl ? { seconds: BigInt(Math.floor(seconds)), nanos: 0 } : undefined },
      }),
    );
    if (made) {
      setContent("");
      setTtl("");
      list.reload();
    }
  }
  async function remove(name: string) {
    if (await run(() => memories.deleteMemory({ name }))) list.reload();
  }
  return (
    <section>
      <h2>Memories</h2>
      <div className="row">
        <input placeholder="search" data-testid="memory-query" value={query} onChange={(e) => setQuery(e.target.value)} />
        <button onClick={() => setSearched(query)} data-testid="memory-search">
          Search
        </button>
        {searched && <button onClick={() => (setQuery(""), setSearched(""))}>Show all</button>}
      </div>
      <ErrorBox error={error ?? list.error} />
      <table data-testid="memories">
        <thead>
          <tr>
            <th>content</th>
            <th>kind</th>
            {searched && <th>score</th>}
            <th>created</th>
            <th>expires</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {list.data?.map(({ memory, score }) => (
            <tr key={memory.name}>
              <td>
                {memory.content} {memory.stale && <small>(stale)</small>}
              </td>
              <td>{enumName(MemoryKind, memory.kind)}</td>
              {searched && <td>{score?.toFixed(3)}</td>}
              <td>{when(memory.createTime)}</td>
              <td data-testid="memory-expiry">{memory.expireTime ? when(memory.expireTime) : "never"}</td>
              <td>
                <button onClick={() => remove(memory.name)}>Delete</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>New memory</h3>
      <div className="stack">
        <textarea rows={2} placeholder="content" data-testid="memory-content" value={content} onChange={(e) => setContent(e.target.value)} />
        <div className="row">
          <select value={kind} onChange={(e) => setKind(Number(e.target.value))}>
            {KINDS.map((k) => (
              <option key={k} value={k}>
                {enumName(MemoryKind, k)}
              </option>
            ))}
          </select>
          <input type="number" placeholder="TTL seconds (empty: keep)" data-testid="memory-ttl" value={ttl} onChange={(e) => setTtl(e.target.value)} />
          <button onClick={create} data-testid="memory-create">
            Create memory
          </button>
        </div>
      </div>
    </section>
  );
}
