module github.com/example/clerk-broker/client/go

// Debian 12's toolchain; newer ones build it too.
go 1.19

// The oldest versions the client is built and tested with: Debian 12's
// grpc-go and protobuf-go (scripts/test-go-client.sh builds against those
// very sources). The genproto and golang.org/x versions are the ones Go's
// minimal version selection picks for these (grpc v1.33.3 itself requires
// that genproto); see README.md, "Versions".
require (
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.5.0 // indirect
	golang.org/x/text v0.7.0 // indirect
)
