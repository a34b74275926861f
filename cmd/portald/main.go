// Command portald is a portal gateway node: the replicated store, the gRPC
// API and the HTTP endpoint (health, readiness, metrics). With no
// configuration it runs the embedded default of DESIGN.md section 7.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/portal-lb/portal/cluster"
	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/dataplane/iptables"
	"github.com/portal-lb/portal/dataplane/userspace"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/server"
)

// Version is set with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "portald",
		Short:         "portal gateway node: replicated Service API and load-balancer dataplane",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	v := bindConfig(root.PersistentFlags())
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(v, root.PersistentFlags())
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return run(ctx, cfg)
	}
	root.AddCommand(&cobra.Command{
		Use:   "cleanup",
		Short: "Remove every PORTAL- iptables chain and rule (and nothing else), then exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := iptables.Cleanup(cmd.Context(), iptables.ExecRunner{}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "portal iptables rules removed")
			return nil
		},
	})
	recoverCmd := &cobra.Command{
		Use:   "recover",
		Short: "After losing quorum for good: make this node's data a single-node cluster (portald must be stopped)",
		Long: `recover rewrites the raft configuration in --data-dir to this node alone.
Use it only when a majority of the cluster is gone for good. Then start
portald on the same data directory (it leads a one-node cluster holding
everything this node had) and join new or wiped nodes to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(v, root.PersistentFlags())
			if err != nil {
				return err
			}
			if err := cluster.Recover(cluster.Config{NodeID: cfg.NodeID, DataDir: cfg.DataDir, RaftAddr: cfg.RaftAddr}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recovered %s: node %s is now the only member; start portald on it\n", cfg.DataDir, cfg.NodeID)
			return nil
		},
	}
	root.AddCommand(recoverCmd)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "portald", Version) },
	})
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "portald:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	log := newLogger(cfg)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Bind both listeners before opening the store, so that a taken port
	// fails at once and cleanly.
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc-addr: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("http-addr: %w", err)
	}
	tc, err := cfg.tls()
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	dialCreds := insecure.NewCredentials()
	var serverOpts []grpc.ServerOption
	if tc.api != nil {
		dialCreds = credentials.NewTLS(tc.dial)
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(tc.api)))
	}
	dataDir, _ := filepath.Abs(cfg.DataDir)
	store, err := cluster.Open(cluster.Config{
		NodeID:      cfg.NodeID,
		DataDir:     dataDir,
		RaftAddr:    cfg.RaftAddr,
		GRPCAddr:    grpcLis.Addr().String(),
		Bootstrap:   cfg.Bootstrap || cfg.Join == "",
		Addresses:   cfg.NodeAddresses,
		RaftTLS:     tc.raftServer,
		RaftDialTLS: tc.dial,
		Cluster:     cfg.clusterConfig(),
		Logger:      log,
		Registerer:  reg,
	})
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	if cfg.Dataplane != "iptables" {
		removeStaleIPTables(log)
	}
	dp := newDataplane(cfg, log, reg)
	var agent *dataplane.Agent
	var health server.HealthSource
	if dp != nil {
		agent = dataplane.NewAgent(dataplane.AgentConfig{
			Source: store, Dataplane: dp, Logger: log, Registerer: reg, ResyncInterval: cfg.ResyncInterval, HealthChecks: true,
			Node: dataplane.Node{Name: cfg.NodeID, Addresses: cfg.nodeAddrs()},
		})
		health = agent
	}
	gs, hs := server.New(store, server.Options{Logger: log, Registerer: reg, NodeID: cfg.NodeID, ServerOptions: serverOpts,
		Health: health, ForwardDialOptions: []grpc.DialOption{grpc.WithTransportCredentials(dialCreds)}})
	httpSrv := &http.Server{Handler: server.NewHTTPHandler(store.Ready, reg, cfg.EnablePprof), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()

	if err := becomeReady(ctx, store, cfg.Join, dialCreds, log); err != nil {
		log.Error("not ready", "err", err)
	} else {
		server.SetServing(hs, true)
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	if agent != nil {
		go func() { agent.Run(agentCtx); close(agentDone) }()
	} else {
		close(agentDone)
	}
	log.Info("portald ready", "api", grpcLis.Addr().String(), "http", "http://"+httpLis.Addr().String(),
		"data", dataDir, "node", cfg.NodeID, "raft", store.RaftAddr(), "dataplane", cfg.Dataplane, "version", Version)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "signal", context.Cause(ctx))
	case serveErr = <-errc:
		log.Error("server failed", "err", serveErr)
	}
	server.SetServing(hs, false)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop() // watches never end by themselves
	}
	stopAgent()
	<-agentDone
	if dp != nil {
		_ = dp.Cleanup(context.Background())
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutCtx)
	if err := store.Close(); err != nil {
		log.Error("closing store", "err", err)
	}
	log.Info("stopped")
	return serveErr
}

// newDataplane returns the configured dataplane; nil for none (or one not
// built yet, which is logged).
func newDataplane(cfg *config, log *slog.Logger, reg prometheus.Registerer) dataplane.Interface {
	switch cfg.Dataplane {
	case "userspace":
		return userspace.New(userspace.Config{
			Logger: log, Registerer: reg,
			DrainGrace: cfg.DrainGrace, UDPIdleTimeout: cfg.UDPIdleTimeout, DialTimeout: cfg.DialTimeout,
		})
	case "iptables":
		var cidr netip.Prefix
		if cfg.ClusterCIDR != "" {
			cidr = netip.MustParsePrefix(cfg.ClusterCIDR)
		}
		return iptables.New(iptables.Config{
			Options: iptables.Options{ClusterCIDR: cidr, MasqueradeAll: cfg.MasqueradeAll},
			Logger:  log, Registerer: reg,
		})
	case "none":
		return nil
	default:
		log.Warn("dataplane not built yet; serving the API only", "dataplane", cfg.Dataplane)
		return nil
	}
}

// removeStaleIPTables removes portal's iptables rules left by an earlier
// run with the iptables dataplane (switching dataplanes). Only root can
// have written them.
func removeStaleIPTables(log *slog.Logger) {
	if os.Geteuid() != 0 {
		return
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := iptables.Cleanup(ctx, iptables.ExecRunner{}); err != nil {
		log.Warn("could not remove iptables rules of an earlier run", "err", err)
	}
}

// becomeReady joins the cluster when asked to, waits for a leader, and
// makes sure the replicated state has the allocation settings and this
// node's record.
func becomeReady(ctx context.Context, store *cluster.Store, join string, creds credentials.TransportCredentials, log *slog.Logger) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if join != "" {
		if err := joinCluster(wctx, join, store.SelfJoinRequest(), creds, log); err != nil {
			return err
		}
	}
	if err := store.WaitLeader(wctx); err != nil {
		return fmt.Errorf("%w (a node removed from its cluster never sees a leader again: wipe its data directory and join anew)", err)
	}
	if store.IsLeader() {
		if err := store.EnsureConfig(wctx); err != nil {
			return err
		}
		return store.EnsureNode(wctx)
	}
	if join == "" {
		// A restarted member refreshes its record (addresses may change).
		for addr := ""; addr == "" && wctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
			addr = store.LeaderAddress()
			if addr != "" {
				return joinCluster(wctx, addr, store.SelfJoinRequest(), creds, log)
			}
		}
	}
	return nil
}

// joinCluster asks a member (any: it forwards to the leader) to add this
// node, retrying until the cluster answers.
func joinCluster(ctx context.Context, addr string, req *portalv1.JoinClusterRequest, creds credentials.TransportCredentials, log *slog.Logger) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("join %s: %w", addr, err)
	}
	defer conn.Close()
	c := portalv1.NewClusterServiceClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.JoinCluster(cctx, req)
		cancel()
		if err == nil {
			log.Info("joined the cluster", "via", addr)
			return nil
		}
		if code := status.Code(err); code == codes.InvalidArgument || code == codes.AlreadyExists {
			return fmt.Errorf("join %s: %w", addr, err)
		}
		log.Warn("join failed; retrying", "via", addr, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %s: %w", addr, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func newLogger(cfg *config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	return l
}
