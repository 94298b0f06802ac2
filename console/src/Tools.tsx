import { useState } from "react";

import type { InvokeToolResponse } from "@cortex-core/client/gen/cortex/experts/v1/tool_service_pb.js";
import { tools } from "./api";
import { SchemaForm } from "./SchemaForm";
import { ErrorBox, Json, StatusBox, useAction, useLoad } from "./util";

export function Tools({ workspace }: { workspace: string }) {
  const list = useLoad(async () => (await tools.listTools({ pageSize: 100 })).tools, []);
  const [selected, setSelected] = useState<string>();
  const [result, setResult] = useState<InvokeToolResponse>();
  const { error, busy, run } = useAction();
  const tool = list.data?.find((t) => t.name === selected);
  return (
    <div className="split">
      <aside>
        <h2>Tools</h2>
        <ErrorBox error={list.error} />
        <ul className="pick" data-testid="tool-list">
          {list.data?.map((t) => (
            <li key={t.name} className={t.name === selected ? "selected" : ""} onClick={() => (setSelected(t.name), setResult(undefined))}>
              <code>{t.name}</code> {t.requiresApproval && <small>(needs approval)</small>}
            </li>
          ))}
        </ul>
      </aside>
      <section>
        {tool ? (
          <>
            <h2>{tool.displayName || tool.name}</h2>
            <p>{tool.description}</p>
            <small>
              server {tool.server || "built-in"} · {tool.idempotent ? "idempotent" : "not idempotent"}
              {tool.requiresApproval && " · requires approval in replies"}
            </small>
            <h3>Try it</h3>
            <SchemaForm
              key={tool.name}
              schema={tool.inputSchema}
              submitLabel="Invoke"
              busy={busy}
              testId="tool-form"
              onSubmit={async (input) => {
                setResult(undefined);
                const response = await run(() => tools.invokeTool({ name: tool.name, workspace, input }));
                if (response) setResult(response);
              }}
            />
            <ErrorBox error={error} />
            {result && (
              <div data-testid="tool-output">
                {result.output && <Json value={result.output} />}
                <StatusBox status={result.error} />
              </div>
            )}
            <details>
              <summary>input schema</summary>
              <Json value={tool.inputSchema} />
            </details>
          </>
        ) : (
          <p>Pick a tool.</p>
        )}
      </section>
    </div>
  );
}
