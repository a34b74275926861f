package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PrintError writes err the way portalctl reports it on stderr:
//
//	Error from server (InvalidArgument): <message>
//	  spec.ports[0].port: must be between 1 and 65535
//
// for gRPC status errors (one line per google.rpc.BadRequest field
// violation), "error: <message>" for anything else, and nothing for errors
// the command already reported.
func PrintError(w io.Writer, err error) {
	if err == nil {
		return
	}
	var rep *reportedError
	if errors.As(err, &rep) {
		return
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "error: %v\n", ue.err)
		if ue.cmdPath != "" {
			fmt.Fprintf(w, "See '%s --help' for usage.\n", ue.cmdPath)
		}
		return
	}
	var ce *contextError
	context := ""
	if errors.As(err, &ce) {
		context = ce.context
		err = ce.err
	}
	if st, ok := grpcStatus(err); ok {
		printStatus(w, st, context)
		return
	}
	if context != "" {
		fmt.Fprintf(w, "error: %s: %v\n", context, err)
		return
	}
	fmt.Fprintf(w, "error: %v\n", err)
}

// grpcStatus returns the status of an error that came from a gRPC call.
func grpcStatus(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil, false
	}
	st := se.GRPCStatus()
	if st == nil || st.Code() == codes.OK {
		return nil, false
	}
	return st, true
}

func printStatus(w io.Writer, st *status.Status, context string) {
	msg := st.Message()
	if context != "" {
		msg = context + ": " + msg
	}
	fmt.Fprintf(w, "Error from server (%s): %s\n", st.Code(), msg)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				if v.GetField() != "" {
					fmt.Fprintf(w, "  %s: %s\n", v.GetField(), v.GetDescription())
				} else {
					fmt.Fprintf(w, "  %s\n", v.GetDescription())
				}
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(w, "  %s: %s\n", v.GetSubject(), v.GetDescription())
			}
		case *errdetails.ErrorInfo:
			// The reason is already in the code and message.
		}
	}
	if st.Code() == codes.Unavailable && strings.Contains(msg, "connection error") {
		fmt.Fprintln(w, "  (is portald running at that address? set --server or PORTAL_SERVER)")
	}
}

// reportedError is an error the command has already printed; it only makes
// portalctl exit non-zero.
type reportedError struct{ n int }

func (e *reportedError) Error() string {
	if e.n == 1 {
		return "1 error"
	}
	return fmt.Sprintf("%d errors", e.n)
}

// usageError is a mistake in the command line.
type usageError struct {
	err     error
	cmdPath string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmdPath, format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...), cmdPath: cmdPath}
}

// contextError says which object an error was about.
type contextError struct {
	context string
	err     error
}

func (e *contextError) Error() string { return e.context + ": " + e.err.Error() }
func (e *contextError) Unwrap() error { return e.err }
