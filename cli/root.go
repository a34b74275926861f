// Package cli implements portalctl, the command-line client of portal's
// gRPC API (proto/portal/v1). It is a plain client: it imports only the
// proto packages and libraries.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Version is the client version; set it at build time with
// -ldflags "-X github.com/portal-lb/portal/cli.Version=v1.2.3".
var Version = "dev"

// DefaultServer is the API address used when neither --server nor
// PORTAL_SERVER is set (the embedded default of portald).
const DefaultServer = "127.0.0.1:7400"

// ServerEnv names the environment variable that sets the default --server.
const ServerEnv = "PORTAL_SERVER"

// options are the global flags shared by every command.
type options struct {
	server     string
	timeout    time.Duration
	consistent bool
	namespace  string
	tlsCA      string
	tlsCert    string
	tlsKey     string

	stdout, stderr io.Writer
}

// Execute runs portalctl with the process's arguments and standard streams
// and returns the exit code (0 on success, 1 on error).
func Execute() int {
	return Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// Run runs portalctl with args, printing errors (once) to stderr, and returns
// the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		PrintError(stderr, err)
		return 1
	}
	return 0
}

// NewRootCommand builds the portalctl command tree writing to stdout and
// stderr. Its Execute returns errors without printing them (warnings and
// per-object errors of multi-object commands are printed as they happen);
// print a returned error with PrintError, or use Run.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &options{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "portalctl",
		Short: "portalctl controls a portal layer-4 load balancer",
		Long: "portalctl manages the Services and Endpoints of a portal cluster through its gRPC API.\n" +
			"It reads Kubernetes v1 Service and Endpoints manifests (YAML or JSON).",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err: err, cmdPath: c.CommandPath()}
	})

	defServer := DefaultServer
	if env := os.Getenv(ServerEnv); env != "" {
		defServer = env
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.server, "server", defServer, "address (HOST:PORT) of a portald gRPC API; env "+ServerEnv)
	pf.DurationVar(&o.timeout, "timeout", 10*time.Second, "time limit for each request to the server")
	pf.BoolVar(&o.consistent, "consistent", false, "linearizable reads: the server confirms leadership before answering get/list")
	pf.StringVarP(&o.namespace, "namespace", "n", "default", "namespace of the objects")
	pf.StringVar(&o.tlsCA, "tls-ca", os.Getenv("PORTAL_TLS_CA"), "PEM CA that signed the server's certificate (enables TLS); env PORTAL_TLS_CA")
	pf.StringVar(&o.tlsCert, "tls-cert", os.Getenv("PORTAL_TLS_CERT"), "PEM client certificate (servers with --tls-client-auth); env PORTAL_TLS_CERT")
	pf.StringVar(&o.tlsKey, "tls-key", os.Getenv("PORTAL_TLS_KEY"), "PEM key of --tls-cert; env PORTAL_TLS_KEY")

	root.AddCommand(
		newApplyCommand(o),
		newGetCommand(o),
		newDescribeCommand(o),
		newDeleteCommand(o),
		newVersionCommand(o),
		newClusterCommand(o),
	)
	return root
}

// --- connection --------------------------------------------------------------

// client is a connection to the API and its service stubs.
type client struct {
	conn    *grpc.ClientConn
	lb      portalv1.LoadBalancerServiceClient
	cluster portalv1.ClusterServiceClient
}

// transportCredentials is plaintext unless a TLS flag is set.
func (o *options) transportCredentials() (credentials.TransportCredentials, error) {
	if o.tlsCA == "" && o.tlsCert == "" && o.tlsKey == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.tlsCA != "" {
		pem, err := os.ReadFile(o.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca: %s holds no PEM certificate", o.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if o.tlsCert != "" || o.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func (o *options) dial() (*client, error) {
	if o.server == "" {
		return nil, errors.New("no server address: set --server or " + ServerEnv)
	}
	creds, err := o.transportCredentials()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(o.server, grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("portalctl/"+Version))
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", o.server, err)
	}
	return &client{
		conn:    conn,
		lb:      portalv1.NewLoadBalancerServiceClient(conn),
		cluster: portalv1.NewClusterServiceClient(conn),
	}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// rpcContext bounds one request by --timeout.
func (o *options) rpcContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	if o.timeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, o.timeout)
}

// namespaceOrDefault returns the -n namespace, "default" when empty.
func (o *options) namespaceOrDefault() string {
	if o.namespace == "" {
		return "default"
	}
	return o.namespace
}

// --- argument helpers --------------------------------------------------------

// resource kinds as the commands name them.
const (
	resService   = "service"
	resEndpoints = "endpoints"
)

// resolveResource maps a resource type argument to service or endpoints.
func resolveResource(s string) (string, bool) {
	switch s {
	case "services", "service", "svc":
		return resService, true
	case "endpoints", "endpoint", "ep":
		return resEndpoints, true
	}
	return "", false
}

type objectRef struct {
	kind string // resService or resEndpoints
	name string
}

func (r objectRef) String() string { return r.kind + "/" + r.name }

// parseRefs reads "TYPE[,TYPE] [NAME...]" or "TYPE/NAME..." arguments. It
// returns the refs named or, for bare types, the kinds to list.
func parseRefs(cmdPath string, args []string) (refs []objectRef, listKinds []string, err error) {
	if len(args) == 0 {
		return nil, nil, usageErrorf(cmdPath, "you must specify the type of resource: services (svc) or endpoints (ep)")
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			kind, name, ok := strings.Cut(a, "/")
			if !ok {
				return nil, nil, usageErrorf(cmdPath, "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got %q)", a)
			}
			res, ok := resolveResource(kind)
			if !ok {
				return nil, nil, usageErrorf(cmdPath, "unknown resource type %q (want services (svc) or endpoints (ep))", kind)
			}
			if name == "" {
				return nil, nil, usageErrorf(cmdPath, "missing name in %q", a)
			}
			refs = append(refs, objectRef{res, name})
		}
		return refs, nil, nil
	}
	var kinds []string
	for _, t := range strings.Split(args[0], ",") {
		res, ok := resolveResource(t)
		if !ok {
			return nil, nil, usageErrorf(cmdPath, "unknown resource type %q (want services (svc) or endpoints (ep))", t)
		}
		kinds = append(kinds, res)
	}
	if len(args) == 1 {
		return nil, kinds, nil
	}
	if len(kinds) > 1 {
		return nil, nil, usageErrorf(cmdPath, "names cannot follow several resource types: use TYPE/NAME")
	}
	for _, name := range args[1:] {
		refs = append(refs, objectRef{kinds[0], name})
	}
	return refs, nil, nil
}
