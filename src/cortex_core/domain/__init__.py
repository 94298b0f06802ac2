"""Plain data and rules: no I/O libraries, no grpc, no protobuf."""
