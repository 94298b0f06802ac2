// Proves the generated JavaScript (protoc-gen-es v2, generated/ts) makes a real
// gRPC round trip through Connect: calls
// cortex.experts.v1.ExpertService/ListExperts with @connectrpc/connect-node's
// gRPC (HTTP/2) transport and prints `status=<CODE_NAME>`.
//
// Usage: node tests/clients/ts/client.mjs HOST:PORT
//
// Bare imports (@connectrpc/*, @bufbuild/protobuf) resolve through
// node_modules symlinks to tools/node_modules, next to this file and in
// generated/ts (`make tools` creates them; both are gitignored).
// Exit status: 0 when the server answered (any status), 1 on usage errors,
// 2 when no round trip happened.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import {
  ExpertService,
  ListExpertsRequestSchema,
} from "../../../generated/ts/cortex/experts/v1/expert_service_pb.js";

// Canonical gRPC code names, indexed by code number (Connect uses the same
// numbers; its own names are lowerCamel and spell "canceled").
const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

const [address] = process.argv.slice(2);
if (!address) {
  console.error("usage: node client.mjs HOST:PORT");
  process.exit(1);
}

const transport = createGrpcTransport({ baseUrl: `http://${address}` });
const client = createClient(ExpertService, transport);

let code = Code.Unknown;
try {
  await client.listExperts(create(ListExpertsRequestSchema, { pageSize: 10 }), {
    timeoutMs: 10_000,
  });
  code = 0;
} catch (err) {
  const connectErr = ConnectError.from(err);
  code = connectErr.code;
  // Connect reports transport failures (refused connection, no HTTP/2) as
  // UNAVAILABLE or DEADLINE_EXCEEDED with a cause; those are not round trips.
  if (code === Code.DeadlineExceeded || (code === Code.Unavailable && connectErr.cause)) {
    console.error(`no round trip: ${connectErr.message}`);
    process.exit(2);
  }
}
console.log(`status=${CODE_NAMES[code] ?? code}`);
