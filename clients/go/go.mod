module github.com/cortexcore/cortex-core/clients/go

go 1.19

require (
	github.com/cortexcore/cortex-core/generated/go v0.1.0
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

// The stubs module lives beside this one in the repository; a release tags both
// (generated/go/vX.Y.Z and clients/go/vX.Y.Z) and this line is what a checkout builds.
replace github.com/cortexcore/cortex-core/generated/go => ../../generated/go
