package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func newDeleteCommand(o *options) *cobra.Command {
	var (
		files          []string
		ignoreNotFound bool
	)
	cmd := &cobra.Command{
		Use:   "delete ((services|svc|endpoints|ep) NAME... | -f FILE|DIR|-)",
		Short: "Delete Services or Endpoints by name or by manifest",
		Example: "  portalctl delete svc web\n  portalctl delete service/web endpoints/web\n" +
			"  portalctl delete -f web.yaml --ignore-not-found",
		RunE: func(cmd *cobra.Command, args []string) error {
			path := cmd.CommandPath()
			var refs []objectRef
			type target struct {
				ref objectRef
				ns  string
			}
			var targets []target
			if len(files) > 0 {
				if len(args) > 0 {
					return usageErrorf(path, "give either -f or resource names, not both")
				}
				objs, err := readManifests(cmd.InOrStdin(), files)
				if err != nil {
					return err
				}
				if err := setNamespaces(cmd, o, objs); err != nil {
					return err
				}
				for i := range objs {
					kind := resService
					if objs[i].Kind == KindEndpoints {
						kind = resEndpoints
					}
					targets = append(targets, target{objectRef{kind, objs[i].Name()}, objs[i].Namespace()})
				}
			} else {
				var listKinds []string
				var err error
				refs, listKinds, err = parseRefs(path, args)
				if err != nil {
					return err
				}
				if len(listKinds) > 0 {
					return usageErrorf(path, "resource(s) were provided, but no name was specified")
				}
				for _, r := range refs {
					targets = append(targets, target{r, o.namespaceOrDefault()})
				}
			}
			c, err := o.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			failed := 0
			for _, t := range targets {
				err := deleteObject(cmd, o, c, t.ref, t.ns)
				if status.Code(err) == codes.NotFound && ignoreNotFound {
					continue
				}
				if err != nil {
					failed++
					PrintError(o.stderr, err)
					continue
				}
				fmt.Fprintf(o.stdout, "%s deleted\n", t.ref)
			}
			if failed > 0 {
				return &reportedError{n: failed}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete the objects in this manifest file, directory or - (repeatable)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	return cmd
}

func deleteObject(cmd *cobra.Command, o *options, c *client, ref objectRef, ns string) error {
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	if ref.kind == resService {
		_, err := c.lb.DeleteService(ctx, &portalv1.DeleteServiceRequest{Namespace: ns, Name: ref.name})
		return err
	}
	_, err := c.lb.DeleteEndpoints(ctx, &portalv1.DeleteEndpointsRequest{Namespace: ns, Name: ref.name})
	return err
}
