package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// call dials the server and runs f with a request context.
func (o *options) call(cmd *cobra.Command, f func(ctx context.Context, c *client) error) error {
	c, err := o.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.rpcContext(cmd.Context())
	defer cancel()
	return f(ctx, c)
}

func newClusterCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show and change the cluster's membership",
	}
	cmd.AddCommand(newClusterStatusCommand(o), newClusterJoinCommand(o), newClusterRemoveCommand(o), newClusterTransferCommand(o))
	return cmd
}

func newClusterStatusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List the nodes with their roles, the leader, term and indexes",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client) error {
				resp, err := c.cluster.GetCluster(ctx, &portalv1.GetClusterRequest{})
				if err != nil {
					return err
				}
				PrintCluster(o.stdout, resp)
				return nil
			})
		},
	}
}

// PrintCluster renders GetCluster as a table and a summary.
func PrintCluster(w interface{ Write([]byte) (int, error) }, c *portalv1.GetClusterResponse) {
	leader := c.GetLeader()
	if leader == "" {
		leader = "<none>"
	}
	fmt.Fprintf(w, "Leader: %s   Term: %d   Commit index: %d   Applied index: %d   (answered by %s)\n\n",
		leader, c.GetTerm(), c.GetCommitIndex(), c.GetAppliedIndex(), c.GetNodeId())
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tREADY\tGRPC\tRAFT\tADDRESSES\tLAST-CONTACT")
	for _, n := range c.GetNodes() {
		contact := "-"
		if ms := n.GetLastContactMillis(); ms > 0 {
			contact = (time.Duration(ms) * time.Millisecond).Round(time.Millisecond).String() + " ago"
		}
		addrs := strings.Join(n.GetAddresses(), ",")
		if addrs == "" {
			addrs = "<none>"
		}
		grpcAddr := n.GetGrpcAddress()
		if grpcAddr == "" {
			grpcAddr = "<unknown>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\n", n.GetId(), n.GetRole(), n.GetReady(), grpcAddr, n.GetRaftAddress(), addrs, contact)
	}
	tw.Flush()
}

func newClusterJoinCommand(o *options) *cobra.Command {
	var req portalv1.JoinClusterRequest
	cmd := &cobra.Command{
		Use:   "join NODE-ID --raft-address HOST:PORT --grpc-address HOST:PORT",
		Short: "Add a node to the cluster as a voter (portald --join does this itself)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.NodeId = args[0]
			return o.call(cmd, func(ctx context.Context, c *client) error {
				resp, err := c.cluster.JoinCluster(ctx, &req)
				if err != nil {
					return err
				}
				fmt.Fprintf(o.stdout, "node/%s joined\n", req.NodeId)
				PrintCluster(o.stdout, resp.GetCluster())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&req.RaftAddress, "raft-address", "", "the node's raft address (required)")
	cmd.Flags().StringVar(&req.GrpcAddress, "grpc-address", "", "the node's gRPC API address (required)")
	cmd.Flags().StringSliceVar(&req.Addresses, "addresses", nil, "addresses the node serves NodePorts on")
	return cmd
}

func newClusterRemoveCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE-ID",
		Short: "Remove a node from the cluster (its data directory must be wiped before it joins again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client) error {
				if _, err := c.cluster.RemoveNode(ctx, &portalv1.RemoveNodeRequest{NodeId: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(o.stdout, "node/%s removed\n", args[0])
				return nil
			})
		},
	}
}

func newClusterTransferCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leadership [NODE-ID]",
		Short: "Hand leadership to a node (or to the most up-to-date follower)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &portalv1.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.NodeId = args[0]
			}
			return o.call(cmd, func(ctx context.Context, c *client) error {
				resp, err := c.cluster.TransferLeadership(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(o.stdout, "leader is now %s\n", resp.GetLeader())
				return nil
			})
		},
	}
}
