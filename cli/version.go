package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func newVersionCommand(o *options) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version and the server's cluster leader",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(o.stdout, "Client Version: %s\n", Version)
			if clientOnly {
				return nil
			}
			c, err := o.dial()
			if err != nil {
				fmt.Fprintf(o.stderr, "warning: cannot reach server %s: %v\n", o.server, err)
				return nil
			}
			defer c.Close()
			ctx, cancel := o.rpcContext(cmd.Context())
			defer cancel()
			resp, err := c.cluster.GetCluster(ctx, &portalv1.GetClusterRequest{})
			if err != nil {
				msg := err.Error()
				if st, ok := status.FromError(err); ok {
					msg = fmt.Sprintf("%s: %s", st.Code(), st.Message())
				}
				fmt.Fprintf(o.stderr, "warning: cannot reach server %s: %s\n", o.server, msg)
				return nil
			}
			leader := resp.GetLeader()
			if leader == "" {
				leader = "<none>"
			}
			tw := tabwriter.NewWriter(o.stdout, 0, 8, 1, ' ', 0)
			fmt.Fprintf(tw, "Server Address:\t%s\n", o.server)
			if resp.GetNodeId() != "" {
				fmt.Fprintf(tw, "Server Node:\t%s\n", resp.GetNodeId())
			}
			fmt.Fprintf(tw, "Cluster Leader:\t%s\n", leader)
			if resp.GetTerm() != 0 {
				fmt.Fprintf(tw, "Raft Term:\t%d\n", resp.GetTerm())
			}
			fmt.Fprintf(tw, "Cluster Nodes:\t%d\n", len(resp.GetNodes()))
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only (do not contact the server)")
	return cmd
}
