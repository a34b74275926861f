package cluster

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The store speaks gRPC status codes so that the server can pass its errors
// through unchanged: INVALID_ARGUMENT and ALREADY_EXISTS carry a
// google.rpc.BadRequest naming the field.

// fieldError builds a status error with one field violation.
func fieldError(code codes.Code, kind, name, field, reason string) error {
	st := status.New(code, fmt.Sprintf("%s %q is invalid: %s: %s", kind, name, field, reason))
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: reason}}}); err == nil {
		st = d
	}
	return st.Err()
}

func notFound(kind, ns, name string) error {
	return status.Errorf(codes.NotFound, "%s %s/%s not found", kind, ns, name)
}

func staleVersion(kind, ns, name string, want, have uint64) error {
	return status.Errorf(codes.Aborted, "%s %s/%s: resourceVersion %d is stale (current %d); read it again and retry", kind, ns, name, want, have)
}
