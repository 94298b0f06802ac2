import { useState, type FormEvent } from "react";
import { tokensFrom } from "@cortex-core/client";
import { auth, session } from "./api";
import { ErrorBox, useAction } from "./util";

export function SignIn() {
  const [mode, setMode] = useState<"login" | "register">("register");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [displayName, setDisplayName] = useState("");
  const { error, busy, run } = useAction();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      const response =
        mode === "register"
          ? await auth.register({ email, password, displayName })
          : await auth.login({ email, password });
      session.set(tokensFrom(response));
    });
  }
  // The server's BadRequest names the request fields; each shows next to its box.
  const fieldError = (field: string) => {
    const text = error?.violation(field);
    return text ? (
      <small className="violation" data-testid={`violation-${field}`}>
        {text}
      </small>
    ) : null;
  };
  return (
    <form className="signin" onSubmit={submit} data-testid="signin-form">
      <h1>Cortex console</h1>
      <div className="modes">
        <button type="button" className={mode === "register" ? "active" : ""} onClick={() => setMode("register")}>
          Register
        </button>
        <button type="button" className={mode === "login" ? "active" : ""} onClick={() => setMode("login")}>
          Sign in
        </button>
      </div>
      <label>
        email
        <input name="email" value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="username" />
        {fieldError("email")}
      </label>
      <label>
        password
        <input
          name="password"
          type="password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          autoComplete={mode === "register" ? "new-password" : "current-password"}
        />
        {fieldError("password")}
      </label>
      {mode === "register" && (
        <label>
          display name
          <input name="display_name" value={displayName} onChange={(e) => setDisplayName(e.target.value)} />
          {fieldError("display_name")}
        </label>
      )}
      <button type="submit" disabled={busy} data-testid="signin-submit">
        {mode === "register" ? "Register" : "Sign in"}
      </button>
      {error && error.fieldViolations.length === 0 && <ErrorBox error={error} />}
    </form>
  );
}
