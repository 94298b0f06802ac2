module github.com/cortexcore/cortex-core/tests/clients/go

go 1.19

require (
	github.com/cortexcore/cortex-core/generated/go v0.1.0
	google.golang.org/grpc v1.33.3
)

replace github.com/cortexcore/cortex-core/generated/go => ../../../generated/go
