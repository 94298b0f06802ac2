// Proves the generated JavaScript (protoc-gen-es v2, generated/ts) makes real,
// authenticated gRPC round trips through Connect's gRPC (HTTP/2) transport:
//
//  1. cortex.auth.v1.AuthService/GetCurrentUser without a token, printing
//     `anonymous=<CODE_NAME>` (UNAUTHENTICATED expected);
//  2. AuthService/Register with the given email;
//  3. AuthService/GetCurrentUser with `authorization: Bearer <access token>`,
//     printing `email=<user.email>`;
//  4. cortex.sessions.v1.WorkspaceService/ListWorkspaces with the same token,
//     printing `workspaces=<count>` and `role=<caller_role of the first>`.
//
// Usage: node tests/clients/ts/client.mjs HOST:PORT EMAIL
//
// Bare imports (@connectrpc/*, @bufbuild/protobuf) resolve through
// node_modules symlinks to tools/node_modules, next to this file and in
// generated/ts (`make tools` creates them; both are gitignored).
// Exit status: 0 when every call succeeded, 1 on usage errors, 2 when no
// round trip happened, 3 when an RPC failed (after printing
// `status=<CODE_NAME>`).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import {
  AuthService,
  GetCurrentUserRequestSchema,
  RegisterRequestSchema,
} from "../../../generated/ts/cortex/auth/v1/auth_service_pb.js";
import {
  ListWorkspacesRequestSchema,
  WorkspaceService,
} from "../../../generated/ts/cortex/sessions/v1/workspace_service_pb.js";
import { WorkspaceRoleSchema } from "../../../generated/ts/cortex/sessions/v1/workspace_pb.js";

const PASSWORD = "correct horse battery staple 42";
const DISPLAY_NAME = "TypeScript Client";
const TIMEOUT_MS = 10_000;

// Canonical gRPC code names, indexed by code number (Connect uses the same
// numbers; its own names are lowerCamel and spell "canceled").
const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

const [address, email] = process.argv.slice(2);
if (!address || !email) {
  console.error("usage: node client.mjs HOST:PORT EMAIL");
  process.exit(1);
}

const transport = createGrpcTransport({ baseUrl: `http://${address}`, httpVersion: "2" });
const auth = createClient(AuthService, transport);
const workspaces = createClient(WorkspaceService, transport);

// The error's ConnectError, exiting 2 when the server never answered.
function roundTrip(err) {
  const connectErr = ConnectError.from(err);
  // Connect reports transport failures (refused connection, no HTTP/2) as
  // UNAVAILABLE or DEADLINE_EXCEEDED with a cause; those are not round trips.
  const code = connectErr.code;
  if (code === Code.DeadlineExceeded || (code === Code.Unavailable && connectErr.cause)) {
    console.error(`no round trip: ${connectErr.message}`);
    process.exit(2);
  }
  return connectErr;
}

// Awaits an RPC; on failure prints `status=<CODE_NAME>` and exits 3.
async function call(method, promise) {
  try {
    return await promise;
  } catch (err) {
    const connectErr = roundTrip(err);
    console.log(`status=${CODE_NAMES[connectErr.code] ?? connectErr.code}`);
    console.error(`${method}: ${connectErr.message}`);
    process.exit(3);
  }
}

let anonymous = Code.Unknown;
try {
  await auth.getCurrentUser(create(GetCurrentUserRequestSchema), { timeoutMs: TIMEOUT_MS });
  anonymous = 0;
} catch (err) {
  anonymous = roundTrip(err).code;
}
console.log(`anonymous=${CODE_NAMES[anonymous] ?? anonymous}`);

const registered = await call(
  "Register",
  auth.register(
    create(RegisterRequestSchema, { email, password: PASSWORD, displayName: DISPLAY_NAME }),
    { timeoutMs: TIMEOUT_MS },
  ),
);
const options = {
  headers: { authorization: `Bearer ${registered.accessToken}` },
  timeoutMs: TIMEOUT_MS,
};

const current = await call(
  "GetCurrentUser",
  auth.getCurrentUser(create(GetCurrentUserRequestSchema), options),
);
console.log(`email=${current.user?.email ?? ""}`);

const listed = await call(
  "ListWorkspaces",
  workspaces.listWorkspaces(create(ListWorkspacesRequestSchema, { pageSize: 10 }), options),
);
console.log(`workspaces=${listed.workspaces.length}`);
if (listed.workspaces.length > 0) {
  // The schema's value descriptors carry the proto name (WORKSPACE_ROLE_OWNER);
  // the generated TS enum's own keys have the prefix stripped (OWNER).
  const role = listed.workspaces[0].callerRole;
  console.log(`role=${WorkspaceRoleSchema.value[role]?.name ?? role}`);
}
