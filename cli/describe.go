package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func newDescribeCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "describe (service|svc) [NAME...]",
		Short:   "Show the details of Services",
		Example: "  portalctl describe svc web\n  portalctl describe service/web -n shop",
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, listKinds, err := parseRefs(cmd.CommandPath(), args)
			if err != nil {
				return err
			}
			for _, r := range refs {
				if r.kind != resService {
					return usageErrorf(cmd.CommandPath(), "describe supports services only (got %s)", r)
				}
			}
			if len(listKinds) > 1 || (len(listKinds) == 1 && listKinds[0] != resService) {
				return usageErrorf(cmd.CommandPath(), "describe supports services only")
			}
			c, err := o.dial()
			if err != nil {
				return err
			}
			defer c.Close()

			var svcs []*portalv1.Service
			failed := 0
			if len(listKinds) > 0 {
				svcs, err = listServices(cmd, o, c, o.namespaceOrDefault())
				if err != nil {
					return err
				}
				if len(svcs) == 0 {
					fmt.Fprintf(o.stderr, "No resources found in %s namespace.\n", o.namespaceOrDefault())
				}
			}
			for _, r := range refs {
				msg, err := getObject(cmd, o, c, r)
				if err != nil {
					failed++
					PrintError(o.stderr, err)
					continue
				}
				svcs = append(svcs, msg.(*portalv1.Service))
			}
			for i, svc := range svcs {
				if i > 0 {
					fmt.Fprintln(o.stdout)
				}
				ep, err := serviceEndpoints(cmd, o, c, svc)
				if err != nil {
					failed++
					PrintError(o.stderr, err)
					continue
				}
				if err := DescribeService(o.stdout, svc, ep, time.Now()); err != nil {
					return err
				}
				if svc.GetSpec().GetHealthCheck() != nil {
					ctx, cancel := o.rpcContext(cmd.Context())
					h, err := c.lb.GetServiceHealth(ctx, &portalv1.GetServiceHealthRequest{
						Namespace: svc.GetMetadata().GetNamespace(), Name: svc.GetMetadata().GetName()})
					cancel()
					if err != nil {
						PrintError(o.stderr, err)
					} else {
						PrintServiceHealth(o.stdout, svc.GetSpec().GetHealthCheck(), h, time.Now())
					}
				}
			}
			if failed > 0 {
				return &reportedError{n: failed}
			}
			return nil
		},
	}
	return cmd
}

// serviceEndpoints fetches the endpoints of svc; nil when it has none.
func serviceEndpoints(cmd *cobra.Command, o *options, c *client, svc *portalv1.Service) (*portalv1.Endpoints, error) {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	resp, err := c.lb.GetEndpoints(ctx, &portalv1.GetEndpointsRequest{
		Namespace:  namespaceOf(svc.GetMetadata()),
		Name:       svc.GetMetadata().GetName(),
		Consistent: o.consistent,
	})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resp.GetEndpoints(), nil
}
