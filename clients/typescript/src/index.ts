// @cortex-core/client: the generated stubs are under "@cortex-core/client/gen/...";
// this entry point holds the helpers and re-exports the services and details
// most callers need.
export { CortexError, codeName, isResumable, isRetryable, type FieldViolation } from "./errors.js";
export { TokenSession, tokensFrom, type Tokens, type TokenSessionOptions } from "./auth.js";
export { resumableEvents, type EventFrame, type ResumableEventsOptions } from "./events.js";

export { AuthService } from "./gen/cortex/auth/v1/auth_service_pb.js";
export { SessionService } from "./gen/cortex/sessions/v1/session_service_pb.js";
export { WorkspaceService } from "./gen/cortex/sessions/v1/workspace_service_pb.js";
export { ConversationService } from "./gen/cortex/context/v1/conversation_service_pb.js";
export { ContextService } from "./gen/cortex/context/v1/context_service_pb.js";
export { MemoryService } from "./gen/cortex/context/v1/memory_service_pb.js";
export { EventService } from "./gen/cortex/events/v1/event_service_pb.js";
export { ExpertService } from "./gen/cortex/experts/v1/expert_service_pb.js";
export { ToolService } from "./gen/cortex/experts/v1/tool_service_pb.js";
export {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
  type BadRequest,
  type ErrorInfo,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";
export { StatusSchema, type Status } from "./gen/google/rpc/status_pb.js";
