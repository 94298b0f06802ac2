// A form built from a JSON Schema (an expert's input_schema, a tool's input_schema,
// a task input request's answer_schema). Top-level properties get a field each:
// strings a text box (a select for enums), numbers and integers a number box,
// booleans a checkbox, anything else a JSON text area. A schema without
// properties gets one JSON text area for the whole object.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { useState, type FormEvent } from "react";

interface Property {
  type?: string | string[];
  description?: string;
  enum?: JsonValue[];
  default?: JsonValue;
  title?: string;
}

function kindOf(property: Property): string {
  const type = Array.isArray(property.type) ? property.type.find((t) => t !== "null") : property.type;
  if (property.enum) return "enum";
  return type ?? "json";
}

function initial(property: Property): string {
  if (property.default === undefined) return kindOf(property) === "boolean" ? "false" : "";
  return typeof property.default === "string" ? property.default : JSON.stringify(property.default);
}

export function SchemaForm({
  schema,
  submitLabel,
  onSubmit,
  busy,
  testId,
}: {
  schema: JsonObject | undefined;
  submitLabel: string;
  onSubmit: (value: JsonObject) => void;
  busy?: boolean;
  testId?: string;
}) {
  const properties = (schema?.properties ?? {}) as Record<string, Property>;
  const required = new Set((schema?.required as string[] | undefined) ?? []);
  const names = Object.keys(properties);
  const [values, setValues] = useState<Record<string, string>>(() =>
    Object.fromEntries(names.map((name) => [name, initial(properties[name])])),
  );
  const [whole, setWhole] = useState("{}");
  const [problem, setProblem] = useState<string>();

  function build(): JsonObject {
    if (names.length === 0) return JSON.parse(whole) as JsonObject;
    const out: JsonObject = {};
    for (const name of names) {
      const raw = values[name] ?? "";
      const kind = kindOf(properties[name]);
      if (raw === "" && kind !== "boolean") {
        if (required.has(name) && kind === "string") out[name] = "";
        continue;
      }
      if (kind === "string") out[name] = raw;
      else if (kind === "number" || kind === "integer") out[name] = Number(raw);
      else if (kind === "boolean") out[name] = raw === "true";
      else if (kind === "enum") out[name] = JSON.parse(JSON.stringify(properties[name].enum?.find((v) => String(v) === raw) ?? raw));
      else out[name] = JSON.parse(raw) as JsonValue;
    }
    return out;
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    try {
      setProblem(undefined);
      onSubmit(build());
    } catch (error) {
      setProblem(`not JSON: ${(error as Error).message}`);
    }
  }

  const set = (name: string, value: string) => setValues((old) => ({ ...old, [name]: value }));
  return (
    <form className="schema-form" onSubmit={submit} data-testid={testId}>
      {names.length === 0 && (
        <label>
          input (JSON)
          <textarea value={whole} onChange={(e) => setWhole(e.target.value)} rows={4} />
        </label>
      )}
      {names.map((name) => {
        const property = properties[name];
        const kind = kindOf(property);
        const label = (
          <span>
            {property.title ?? name}
            {required.has(name) && " *"} <small>({kind})</small>
          </span>
        );
        return (
          <label key={name} title={property.description}>
            {label}
            {kind === "boolean" ? (
              <input
                type="checkbox"
                name={name}
                checked={values[name] === "true"}
                onChange={(e) => set(name, String(e.target.checked))}
              />
            ) : kind === "enum" ? (
              <select name={name} value={values[name]} onChange={(e) => set(name, e.target.value)}>
                <option value="">—</option>
                {property.enum?.map((option) => (
                  <option key={String(option)} value={String(option)}>
                    {String(option)}
                  </option>
                ))}
              </select>
            ) : kind === "string" ? (
              <textarea name={name} rows={2} value={values[name]} onChange={(e) => set(name, e.target.value)} />
            ) : kind === "number" || kind === "integer" ? (
              <input type="number" name={name} value={values[name]} onChange={(e) => set(name, e.target.value)} />
            ) : (
              <textarea name={name} rows={3} placeholder="JSON" value={values[name]} onChange={(e) => set(name, e.target.value)} />
            )}
            {property.description && <small className="hint">{property.description}</small>}
          </label>
        );
      })}
      {problem && <div className="error">{problem}</div>}
      <button type="submit" disabled={busy}>
        {submitLabel}
      </button>
    </form>
  );
}
