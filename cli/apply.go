package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func newApplyCommand(o *options) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update Services and Endpoints from Kubernetes manifests",
		Long: "Apply creates or updates the Services and Endpoints in Kubernetes v1 manifests\n" +
			"(YAML, several documents separated by ---, JSON, or a stream of JSON objects;\n" +
			"kinds Service, Endpoints and List). A directory applies every *.yaml, *.yml and\n" +
			"*.json file in it, in name order; - reads standard input.",
		Example: "  portalctl apply -f web.yaml\n  portalctl apply -f manifests/\n  portalctl get svc web -o yaml | portalctl apply -f -",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return usageErrorf(cmd.CommandPath(), "must specify one of -f")
			}
			objs, err := readManifests(cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			if err := setNamespaces(cmd, o, objs); err != nil {
				return err
			}
			for i := range objs {
				for _, f := range objs[i].IgnoredFields {
					fmt.Fprintf(o.stderr, "warning: %s: ignoring unknown field %s\n", objs[i].Ref(), f)
				}
			}
			c, err := o.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			failed := 0
			for i := range objs {
				obj := &objs[i]
				result, err := applyObject(cmd, o, c, obj)
				if err != nil {
					failed++
					PrintError(o.stderr, &contextError{
						context: fmt.Sprintf("error applying %s from %q", obj.Ref(), obj.Source),
						err:     err,
					})
					continue
				}
				fmt.Fprintf(o.stdout, "%s %s\n", obj.Ref(), result)
			}
			if failed > 0 {
				return &reportedError{n: failed}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory or - for standard input (repeatable)")
	return cmd
}

func applyObject(cmd *cobra.Command, o *options, c *client, obj *Object) (string, error) {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	var result string
	switch obj.Kind {
	case KindService:
		svc := proto.Clone(obj.Service).(*portalv1.Service)
		clearServerFields(svc.GetMetadata())
		svc.Status = nil
		resp, err := c.lb.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: svc})
		if err != nil {
			return "", err
		}
		result = resp.GetResult()
	case KindEndpoints:
		ep := proto.Clone(obj.Endpoints).(*portalv1.Endpoints)
		clearServerFields(ep.GetMetadata())
		resp, err := c.lb.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: ep})
		if err != nil {
			return "", err
		}
		result = resp.GetResult()
	default:
		return "", fmt.Errorf("unsupported kind %q", obj.Kind)
	}
	if result == "" {
		result = "configured"
	}
	return result, nil
}

// clearServerFields drops the metadata the server assigns (uid, creation
// time) so that the output of get -o yaml can be applied again. The resource
// version is kept: like kubectl, applying a stale copy fails.
func clearServerFields(m *portalv1.ObjectMeta) {
	if m == nil {
		return
	}
	m.Uid = ""
	m.CreationTimestamp = nil
}

// setNamespaces gives objects without a namespace the -n one; an explicit -n
// that contradicts an object's namespace is an error (as in kubectl).
func setNamespaces(cmd *cobra.Command, o *options, objs []Object) error {
	explicit := cmd.Flags().Changed("namespace")
	ns := o.namespaceOrDefault()
	for i := range objs {
		md := objs[i].Metadata()
		switch {
		case md.GetNamespace() == "":
			md.Namespace = ns
		case explicit && md.GetNamespace() != ns:
			return fmt.Errorf("%s:%d: the namespace of %s is %q, not %q (the --namespace given); change one of them",
				objs[i].Source, objs[i].Line, objs[i].Ref(), md.GetNamespace(), ns)
		}
	}
	return nil
}

// readManifests reads every -f argument (file, directory or -) and parses
// all of it before anything is sent.
func readManifests(stdin io.Reader, args []string) ([]Object, error) {
	var objs []Object
	readStdin := false
	for _, arg := range args {
		var names []string
		if arg == "-" {
			if readStdin {
				return nil, errors.New("standard input (-) can only be read once")
			}
			readStdin = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			got, err := ParseManifests("-", data)
			if err != nil {
				return nil, err
			}
			objs = append(objs, got...)
			continue
		}
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, fmt.Errorf("the path %q does not exist", arg)
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(arg)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if e.IsDir() {
					continue
				}
				switch strings.ToLower(filepath.Ext(e.Name())) {
				case ".yaml", ".yml", ".json":
					names = append(names, filepath.Join(arg, e.Name()))
				}
			}
			sort.Strings(names)
			if len(names) == 0 {
				return nil, fmt.Errorf("directory %q has no *.yaml, *.yml or *.json files", arg)
			}
		} else {
			names = []string{arg}
		}
		for _, name := range names {
			data, err := os.ReadFile(name)
			if err != nil {
				return nil, err
			}
			got, err := ParseManifests(name, data)
			if err != nil {
				return nil, err
			}
			objs = append(objs, got...)
		}
	}
	if len(objs) == 0 {
		return nil, errors.New("no objects passed (the manifests hold no Service or Endpoints)")
	}
	return objs, nil
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(cmd.CommandPath(), "unexpected arguments %q", args)
	}
	return nil
}
