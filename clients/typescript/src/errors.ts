// A failed call as a typed error: the gRPC code plus the google.rpc details the
// server attaches (docs/contracts.md): ErrorInfo (reason, domain, metadata),
// BadRequest (field violations) and RetryInfo (when to try again). Connect
// carries the details in grpc-status-details-bin; findDetails decodes them with
// the generated schemas, so no caller sees raw Any bytes.
import { createRegistry } from "@bufbuild/protobuf";
import { anyUnpack, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

/** One invalid request field, as the server's BadRequest names it. */
export interface FieldViolation {
  /** The request field path, e.g. `password` or `memory.ttl`. */
  field: string;
  /** A sentence for a person. */
  description: string;
  /** A machine-readable reason, when the server gives one. */
  reason: string;
}

/** Canonical gRPC code names, indexed by code number (Connect's are lowerCamel). */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** `UNAUTHENTICATED` for Code.Unauthenticated, and so on. */
export function codeName(code: Code | number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

const detailRegistry = createRegistry(ErrorInfoSchema, BadRequestSchema, RetryInfoSchema);

function durationMs(duration: Duration | undefined): number | undefined {
  if (!duration) return undefined;
  return Number(duration.seconds) * 1000 + Math.round(duration.nanos / 1e6);
}

/** A failed call (or a google.rpc.Status inside a reply or task) with its details decoded. */
export class CortexError extends Error {
  override readonly name = "CortexError";
  /** The gRPC status code. */
  readonly code: Code;
  /** The server's message, without Connect's `[code]` prefix. */
  readonly rawMessage: string;
  /** ErrorInfo.reason, e.g. `INVALID_CREDENTIALS`, `RATE_LIMITED`; "" when absent. */
  readonly reason: string;
  /** ErrorInfo.domain ("cortex.dev" for Cortex's own errors); "" when absent. */
  readonly domain: string;
  /** ErrorInfo.metadata (e.g. `resume_token` on SUBSCRIBER_TOO_SLOW). */
  readonly metadata: Readonly<Record<string, string>>;
  /** BadRequest field violations, in the server's order. */
  readonly fieldViolations: readonly FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, when the server says when to retry. */
  readonly retryDelayMs: number | undefined;

  constructor(
    code: Code,
    rawMessage: string,
    details: { errorInfo?: ErrorInfo; badRequest?: BadRequest[]; retryInfo?: RetryInfo },
    options?: { cause?: unknown },
  ) {
    super(
      `${codeName(code)}${details.errorInfo?.reason ? ` ${details.errorInfo.reason}` : ""}: ${rawMessage}`,
      options,
    );
    this.code = code;
    this.rawMessage = rawMessage;
    this.reason = details.errorInfo?.reason ?? "";
    this.domain = details.errorInfo?.domain ?? "";
    this.metadata = { ...(details.errorInfo?.metadata ?? {}) };
    this.fieldViolations = (details.badRequest ?? []).flatMap((request) =>
      request.fieldViolations.map((violation) => ({
        field: violation.field,
        description: violation.description,
        reason: violation.reason,
      })),
    );
    this.retryDelayMs = durationMs(details.retryInfo?.retryDelay);
  }

  /** The gRPC code name, e.g. `INVALID_ARGUMENT`. */
  get codeName(): string {
    return codeName(this.code);
  }

  /** The description of the first violation of `field` (or of a sub-field of it). */
  violation(field: string): string | undefined {
    return this.fieldViolations.find(
      (violation) => violation.field === field || violation.field.startsWith(`${field}.`),
    )?.description;
  }

  /** Any thrown value as a CortexError: a ConnectError's details are decoded. */
  static from(error: unknown): CortexError {
    if (error instanceof CortexError) return error;
    const connectError = ConnectError.from(error);
    return new CortexError(
      connectError.code,
      connectError.rawMessage,
      {
        errorInfo: connectError.findDetails(ErrorInfoSchema)[0],
        badRequest: connectError.findDetails(BadRequestSchema),
        retryInfo: connectError.findDetails(RetryInfoSchema)[0],
      },
      { cause: error },
    );
  }

  /** A google.rpc.Status carried in a message (ReplyCompletion.error, Task.error, ...). */
  static fromStatus(status: Status): CortexError {
    const decoded = status.details.map((detail) => anyUnpack(detail, detailRegistry));
    const pick = <T>(typeName: string) =>
      decoded.filter((message) => message?.$typeName === typeName) as T[];
    return new CortexError(status.code as Code, status.message, {
      errorInfo: pick<ErrorInfo>(ErrorInfoSchema.typeName)[0],
      badRequest: pick<BadRequest>(BadRequestSchema.typeName),
      retryInfo: pick<RetryInfo>(RetryInfoSchema.typeName)[0],
    });
  }
}

/** Whether a call that failed this way may succeed when simply tried again later. */
export function isRetryable(error: CortexError): boolean {
  return (
    error.code === Code.Unavailable ||
    error.code === Code.DeadlineExceeded ||
    error.code === Code.Aborted ||
    (error.code === Code.ResourceExhausted && error.retryDelayMs !== undefined) ||
    (error.code === Code.Unknown && error.reason === "")
  );
}

/** Reasons the server gives to a failure after which reopening a resumable stream can succeed. */
const RESUMABLE_REASONS: Partial<Record<Code, ReadonlySet<string> | "any">> = {
  [Code.Unavailable]: "any",
  [Code.ResourceExhausted]: new Set([
    "SUBSCRIBER_TOO_SLOW",
    "TOO_MANY_STREAMS",
    "RATE_LIMITED",
    "TOO_MANY_REQUESTS",
  ]),
  [Code.Unauthenticated]: new Set(["TOKEN_EXPIRED"]),
};

/** Codes of a failure that came from the transport, not from a Cortex server. */
const TRANSPORT_FAILURES: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.Internal,
  Code.Unknown,
  Code.Canceled,
]);

/**
 * Whether reopening a resumable stream (SubscribeEvents from its resume token, WatchTask
 * from `afterSequence`) after `error` can succeed. Such a stream only reads and resumes
 * where it was, so the rule is about the transport, not about side effects:
 *
 * - a failure without an ErrorInfo reason came from the transport, and is resumed when
 *   its code is UNAVAILABLE (refused or dropped connection), INTERNAL, UNKNOWN or
 *   CANCELLED (a stream reset by a proxy: behind Envoy a killed replica's stream arrives
 *   as INTERNAL, HTTP/2 RST_STREAM error code 2, not UNAVAILABLE; the caller's own abort
 *   ends `resumableEvents` before this is asked);
 * - a failure with one is the server's, and is resumed only for UNAVAILABLE (any reason),
 *   RESOURCE_EXHAUSTED SUBSCRIBER_TOO_SLOW / TOO_MANY_STREAMS / RATE_LIMITED /
 *   TOO_MANY_REQUESTS and UNAUTHENTICATED TOKEN_EXPIRED.
 *
 * INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND, INVALID_RESUME_TOKEN, a server's own
 * INTERNAL and DEADLINE_EXCEEDED (no helper sets a per-attempt deadline: it is the
 * caller's) are not.
 */
export function isResumable(error: CortexError): boolean {
  if (error.reason === "") return TRANSPORT_FAILURES.has(error.code);
  const reasons = RESUMABLE_REASONS[error.code];
  return reasons === "any" || (reasons !== undefined && reasons.has(error.reason));
}
