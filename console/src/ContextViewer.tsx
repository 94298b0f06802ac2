// What the model gets: every candidate of the conversation's context window at a
// chosen budget, with its decision, reason and token count, drawn as a bar
// against the budget (included items fill it; pruned and summarized ones are
// drawn past it, hatched, so a person sees at a glance what was left out).
import { useState } from "react";
import {
  ContextDecision,
  ContextItemKind,
} from "@cortex-core/client/gen/cortex/context/v1/context_window_pb.js";
import { contexts } from "./api";
import { enumName, ErrorBox, useLoad } from "./util";

export function ContextViewer({ conversation }: { conversation: string }) {
  const [budgetText, setBudgetText] = useState("");
  const [budget, setBudget] = useState(0);
  const window = useLoad(
    () => contexts.getContextWindow({ conversation, tokenBudget: budget }),
    [conversation, budget],
  );
  const data = window.data;
  const items = data?.items ?? [];
  const included = items.filter((i) => i.decision === ContextDecision.INCLUDED);
  const left = items.filter((i) => i.decision !== ContextDecision.INCLUDED);
  const leftTokens = left.reduce((sum, i) => sum + i.tokenCount, 0);
  const scale = Math.max(data?.tokenBudget ?? 1, (data?.totalTokenCount ?? 0) + leftTokens, 1);
  const pct = (tokens: number) => `${(100 * tokens) / scale}%`;
  return (
    <div className="context" data-testid="context-viewer">
      <div className="row">
        <h3>Context window</h3>
        <label>
          budget (tokens){" "}
          <input
            type="number"
            data-testid="context-budget"
            placeholder="server default"
            value={budgetText}
            onChange={(e) => setBudgetText(e.target.value)}
          />
        </label>
        <button onClick={() => setBudget(Number(budgetText) || 0)} data-testid="context-apply">
          Show
        </button>
      </div>
      <ErrorBox error={window.error} />
      {data && (
        <>
          <p data-testid="context-summary">
            {data.totalTokenCount} of {data.tokenBudget} tokens used by {included.length} included items;{" "}
            {left.length} left out ({leftTokens} tokens).
          </p>
          <div className="budget-bar" data-testid="budget-bar">
            {[...included, ...left].map((item, index) => (
              <div
                key={index}
                className={`segment ${enumName(ContextDecision, item.decision).toLowerCase()} kind-${enumName(ContextItemKind, item.kind).toLowerCase()}`}
                style={{ width: pct(item.tokenCount) }}
                title={`${enumName(ContextItemKind, item.kind)} ${item.source}: ${item.tokenCount} tokens, ${enumName(ContextDecision, item.decision)} (${item.reason})`}
              />
            ))}
            <div className="budget-line" style={{ left: pct(data.tokenBudget) }} title={`budget ${data.tokenBudget}`} />
          </div>
          <table data-testid="context-items">
            <thead>
              <tr>
                <th>kind</th>
                <th>source</th>
                <th>decision</th>
                <th>reason</th>
                <th>tokens</th>
                <th>text</th>
              </tr>
            </thead>
            <tbody>
              {items.map((item, index) => (
                <tr key={index} className={enumName(ContextDecision, item.decision).toLowerCase()}>
                  <td>{enumName(ContextItemKind, item.kind)}</td>
                  <td>
                    <code>{item.source.split("/").slice(-2).join("/")}</code>
                  </td>
                  <td>{enumName(ContextDecision, item.decision)}</td>
                  <td>{item.reason}</td>
                  <td>{item.tokenCount}</td>
                  <td className="preview">{item.text.slice(0, 120)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}
