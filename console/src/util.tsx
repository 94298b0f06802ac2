import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { CortexError, type Status } from "@cortex-core/client";
import { useCallback, useEffect, useState } from "react";

export function when(timestamp: Timestamp | undefined): string {
  return timestamp ? timestampDate(timestamp).toLocaleString() : "—";
}

/** The enum value's name without its prefix, e.g. FinishReason.STOP → "STOP". */
export function enumName(values: Record<number, string>, value: number): string {
  return values[value] ?? String(value);
}

export function ErrorBox({ error }: { error: CortexError | undefined }) {
  if (!error) return null;
  return (
    <div className="error" role="alert" data-testid="error">
      <strong>{error.codeName}</strong>
      {error.reason && <> · <code>{error.reason}</code></>}: {error.rawMessage}
      {error.fieldViolations.length > 0 && (
        <ul>
          {error.fieldViolations.map((violation) => (
            <li key={violation.field + violation.description}>
              <code>{violation.field}</code>: {violation.description}
            </li>
          ))}
        </ul>
      )}
      {error.retryDelayMs !== undefined && <div>retry in {error.retryDelayMs} ms</div>}
    </div>
  );
}

export function StatusBox({ status }: { status: Status | undefined }) {
  if (!status || status.code === 0) return null;
  return <ErrorBox error={CortexError.fromStatus(status)} />;
}

/** Runs an async action, keeping its error (decoded) and whether it is running. */
export function useAction() {
  const [error, setError] = useState<CortexError>();
  const [busy, setBusy] = useState(false);
  const run = useCallback(async <T,>(action: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(undefined);
    try {
      return await action();
    } catch (caught) {
      setError(CortexError.from(caught));
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { error, busy, run, setError };
}

/** Loads data when its inputs change; `reload` loads again. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<CortexError>();
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (value) => live && (setData(value), setError(undefined)),
      (caught) => live && setError(CortexError.from(caught)),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, version]);
  const reload = useCallback(() => setVersion((v) => v + 1), []);
  return { data, error, reload };
}

export function Json({ value }: { value: unknown }) {
  return <pre className="json">{JSON.stringify(value, null, 2)}</pre>;
}
