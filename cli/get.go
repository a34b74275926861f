package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func newGetCommand(o *options) *cobra.Command {
	var (
		output        string
		allNamespaces bool
		noHeaders     bool
	)
	cmd := &cobra.Command{
		Use:   "get (services|svc|endpoints|ep) [NAME...]",
		Short: "List Services or Endpoints, or show some by name",
		Example: "  portalctl get svc\n  portalctl get services -A -o wide\n" +
			"  portalctl get svc web -o yaml\n  portalctl get ep web",
		RunE: func(cmd *cobra.Command, args []string) error {
			path := cmd.CommandPath()
			switch output {
			case OutputTable, "", OutputWide, OutputJSON, OutputYAML:
			default:
				return usageErrorf(path, "unknown output format %q (want table, wide, json or yaml)", output)
			}
			refs, listKinds, err := parseRefs(path, args)
			if err != nil {
				return err
			}
			if allNamespaces && len(refs) > 0 {
				return usageErrorf(path, "a resource cannot be retrieved by name across all namespaces")
			}
			c, err := o.dial()
			if err != nil {
				return err
			}
			defer c.Close()

			var (
				msgs   []proto.Message
				svcs   []*portalv1.Service
				eps    []*portalv1.Endpoints
				failed int
			)
			listing := len(listKinds) > 0
			if listing {
				ns := o.namespaceOrDefault()
				if allNamespaces {
					ns = ""
				}
				for _, kind := range listKinds {
					if kind == resService && svcs == nil {
						svcs, err = listServices(cmd, o, c, ns)
					} else if kind == resEndpoints && eps == nil {
						eps, err = listEndpoints(cmd, o, c, ns)
					}
					if err != nil {
						return err
					}
				}
			} else {
				for _, ref := range refs {
					msg, err := getObject(cmd, o, c, ref)
					if err != nil {
						failed++
						PrintError(o.stderr, err)
						continue
					}
					switch m := msg.(type) {
					case *portalv1.Service:
						svcs = append(svcs, m)
					case *portalv1.Endpoints:
						eps = append(eps, m)
					}
					msgs = append(msgs, msg)
				}
			}
			if listing {
				for _, s := range svcs {
					msgs = append(msgs, s)
				}
				for _, e := range eps {
					msgs = append(msgs, e)
				}
			}

			switch output {
			case OutputJSON, OutputYAML:
				if failed == 0 || len(msgs) > 0 {
					asList := listing || len(refs) != 1
					if err := WriteObjects(o.stdout, output, msgs, asList); err != nil {
						return err
					}
				}
			default:
				opts := TableOptions{AllNamespaces: allNamespaces, Wide: output == OutputWide, NoHeaders: noHeaders}
				if listing && len(msgs) == 0 {
					if allNamespaces {
						fmt.Fprintln(o.stderr, "No resources found")
					} else {
						fmt.Fprintf(o.stderr, "No resources found in %s namespace.\n", o.namespaceOrDefault())
					}
					break
				}
				if len(svcs) > 0 {
					if err := PrintServices(o.stdout, svcs, opts); err != nil {
						return err
					}
				}
				if len(eps) > 0 {
					if len(svcs) > 0 {
						fmt.Fprintln(o.stdout)
					}
					if err := PrintEndpoints(o.stdout, eps, opts); err != nil {
						return err
					}
				}
			}
			if failed > 0 {
				return &reportedError{n: failed}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", OutputTable, "output format: table, wide, json or yaml")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list the objects of every namespace")
	f.BoolVar(&noHeaders, "no-headers", false, "leave out the table header")
	return cmd
}

func listServices(cmd *cobra.Command, o *options, c *client, ns string) ([]*portalv1.Service, error) {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	resp, err := c.lb.ListServices(ctx, &portalv1.ListServicesRequest{Namespace: ns, Consistent: o.consistent})
	if err != nil {
		return nil, err
	}
	svcs := resp.GetServices()
	sort.SliceStable(svcs, func(i, j int) bool {
		a, b := svcs[i].GetMetadata(), svcs[j].GetMetadata()
		if namespaceOf(a) != namespaceOf(b) {
			return namespaceOf(a) < namespaceOf(b)
		}
		return a.GetName() < b.GetName()
	})
	return svcs, nil
}

func listEndpoints(cmd *cobra.Command, o *options, c *client, ns string) ([]*portalv1.Endpoints, error) {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	resp, err := c.lb.ListEndpoints(ctx, &portalv1.ListEndpointsRequest{Namespace: ns, Consistent: o.consistent})
	if err != nil {
		return nil, err
	}
	eps := resp.GetEndpoints()
	sort.SliceStable(eps, func(i, j int) bool {
		a, b := eps[i].GetMetadata(), eps[j].GetMetadata()
		if namespaceOf(a) != namespaceOf(b) {
			return namespaceOf(a) < namespaceOf(b)
		}
		return a.GetName() < b.GetName()
	})
	return eps, nil
}

func getObject(cmd *cobra.Command, o *options, c *client, ref objectRef) (proto.Message, error) {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	ns := o.namespaceOrDefault()
	if ref.kind == resService {
		resp, err := c.lb.GetService(ctx, &portalv1.GetServiceRequest{Namespace: ns, Name: ref.name, Consistent: o.consistent})
		if err != nil {
			return nil, err
		}
		if resp.GetService() == nil {
			return nil, fmt.Errorf("server returned no service for %s", ref)
		}
		return resp.GetService(), nil
	}
	resp, err := c.lb.GetEndpoints(ctx, &portalv1.GetEndpointsRequest{Namespace: ns, Name: ref.name, Consistent: o.consistent})
	if err != nil {
		return nil, err
	}
	if resp.GetEndpoints() == nil {
		return nil, fmt.Errorf("server returned no endpoints for %s", ref)
	}
	return resp.GetEndpoints(), nil
}
