package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// config is portald's configuration: a YAML file (--config), PORTAL_*
// variables and flags, in increasing precedence. configs/portald.yaml
// documents every key.
type config struct {
	DataDir                string
	NodeID                 string
	GRPCAddr               string
	RaftAddr               string
	HTTPAddr               string
	Dataplane              string
	ServiceCIDR            string
	LBPool                 string
	NodePortMin            int32
	NodePortMax            int32
	NodeAddresses          []string
	AllowLoopbackEndpoints bool
	LogLevel               string
	LogFormat              string
	EnablePprof            bool
	DrainGrace             time.Duration
	UDPIdleTimeout         time.Duration
	DialTimeout            time.Duration
	ResyncInterval         time.Duration
	Bootstrap              bool
	Join                   string
	TLSCert, TLSKey, TLSCA string
	TLSClientAuth          bool
	ClusterCIDR            string
	MasqueradeAll          bool
}

var dataplanes = []string{"userspace", "iptables", "ipvs", "none"}

func bindConfig(fs *pflag.FlagSet) *viper.Viper {
	host, _ := os.Hostname()
	if host == "" {
		host = "portal-1"
	}
	fs.String("config", "", "YAML configuration file (keys as the flags' names)")
	fs.String("data-dir", "./portal-data", "directory for the raft log and snapshots")
	fs.Bool("bootstrap", false, "start a new cluster with this node as its only voter (the default when --join is not given)")
	fs.String("join", "", "gRPC address (host:port) of any member of the cluster to join")
	fs.String("tls-cert", "", "PEM certificate of this node: TLS on the gRPC API and (mutual) on raft")
	fs.String("tls-key", "", "PEM private key of --tls-cert")
	fs.String("tls-ca", "", "PEM CA of the cluster: verifies raft peers (and API clients with --tls-client-auth)")
	fs.Bool("tls-client-auth", false, "require API clients to present a certificate signed by --tls-ca")
	fs.String("node-id", host, "this node's unique id in the cluster")
	fs.String("grpc-addr", "127.0.0.1:7400", "gRPC API address")
	fs.String("raft-addr", "127.0.0.1:7401", "raft address (bound and advertised)")
	fs.String("http-addr", "127.0.0.1:7480", "HTTP address: web page, /metrics, /healthz, /readyz")
	fs.String("dataplane", "userspace", "dataplane: "+strings.Join(dataplanes, ", "))
	fs.String("service-cidr", "127.96.0.0/16", "CIDR ClusterIPs are allocated from")
	fs.String("lb-pool", "127.97.0.0/16", "CIDR LoadBalancer ingress IPs are allocated from")
	fs.String("node-port-range", "30000-32767", "range NodePorts are allocated from")
	fs.StringSlice("node-addresses", []string{"127.0.0.1"}, "addresses NodePorts are served on")
	fs.Bool("allow-loopback-endpoints", true, "accept loopback endpoint addresses (single-node embedded use)")
	fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.String("log-format", "text", "log format: text or json")
	fs.Bool("enable-pprof", false, "serve Go's /debug/pprof/ on the HTTP address")
	fs.Duration("drain-grace", 30*time.Second, "userspace: how long connections to a removed endpoint or deleted service keep running")
	fs.Duration("udp-idle-timeout", 30*time.Second, "userspace: end a UDP flow after this long without traffic")
	fs.Duration("resync-interval", 30*time.Second, "full dataplane resync period (repairs rules changed behind portal's back)")
	fs.String("cluster-cidr", "", "iptables: traffic to ClusterIPs from outside this CIDR is masqueraded (empty: none)")
	fs.Bool("masquerade-all", false, "iptables: masquerade all ClusterIP traffic")
	fs.Duration("dial-timeout", time.Second, "userspace: give up on a backend that does not accept within this (the connection tries another)")

	v := viper.New()
	v.SetEnvPrefix("PORTAL")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	_ = v.BindPFlags(fs)
	return v
}

func loadConfig(v *viper.Viper, fs *pflag.FlagSet) (*config, error) {
	if file := v.GetString("config"); file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		// Reject unknown keys: a typo must not silently fall back to a default.
		fileOnly := viper.New()
		fileOnly.SetConfigFile(file)
		fileOnly.SetConfigType("yaml")
		_ = fileOnly.ReadInConfig()
		for _, k := range fileOnly.AllKeys() {
			if fs.Lookup(k) == nil || k == "config" {
				return nil, fmt.Errorf("config %s: unknown key %q (keys are the flags' names, see configs/portald.yaml)", file, k)
			}
		}
	}
	c := &config{
		DataDir:                v.GetString("data-dir"),
		NodeID:                 v.GetString("node-id"),
		GRPCAddr:               v.GetString("grpc-addr"),
		RaftAddr:               v.GetString("raft-addr"),
		HTTPAddr:               v.GetString("http-addr"),
		Dataplane:              v.GetString("dataplane"),
		ServiceCIDR:            v.GetString("service-cidr"),
		LBPool:                 v.GetString("lb-pool"),
		NodeAddresses:          v.GetStringSlice("node-addresses"),
		AllowLoopbackEndpoints: v.GetBool("allow-loopback-endpoints"),
		LogLevel:               v.GetString("log-level"),
		LogFormat:              v.GetString("log-format"),
		EnablePprof:            v.GetBool("enable-pprof"),
		DrainGrace:             v.GetDuration("drain-grace"),
		UDPIdleTimeout:         v.GetDuration("udp-idle-timeout"),
		DialTimeout:            v.GetDuration("dial-timeout"),
		ResyncInterval:         v.GetDuration("resync-interval"),
		Bootstrap:              v.GetBool("bootstrap"),
		Join:                   v.GetString("join"),
		TLSCert:                v.GetString("tls-cert"),
		TLSKey:                 v.GetString("tls-key"),
		TLSCA:                  v.GetString("tls-ca"),
		TLSClientAuth:          v.GetBool("tls-client-auth"),
		ClusterCIDR:            v.GetString("cluster-cidr"),
		MasqueradeAll:          v.GetBool("masquerade-all"),
	}
	var errs []string
	bad := func(key, format string, args ...any) { errs = append(errs, key+": "+fmt.Sprintf(format, args...)) }
	if !slices.Contains(dataplanes, c.Dataplane) {
		bad("dataplane", "%q is not one of %s", c.Dataplane, strings.Join(dataplanes, ", "))
	}
	for key, cidr := range map[string]string{"service-cidr": c.ServiceCIDR, "lb-pool": c.LBPool} {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad(key, "%q is not a CIDR", cidr)
		}
	}
	min, max, err := parseRange(v.GetString("node-port-range"))
	if err != nil {
		bad("node-port-range", "%v", err)
	}
	c.NodePortMin, c.NodePortMax = min, max
	if c.ClusterCIDR != "" {
		if _, err := netip.ParsePrefix(c.ClusterCIDR); err != nil {
			bad("cluster-cidr", "%q is not a CIDR", c.ClusterCIDR)
		}
	}
	for _, a := range c.NodeAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			bad("node-addresses", "%q is not an IP address", a)
		}
	}
	if c.ClusterCIDR != "" {
		if _, err := netip.ParsePrefix(c.ClusterCIDR); err != nil {
			bad("cluster-cidr", "%q is not a CIDR", c.ClusterCIDR)
		}
	}
	if _, err := c.tls(); err != nil {
		bad("tls", "%v", err)
	}
	if c.Bootstrap && c.Join != "" {
		bad("join", "--bootstrap and --join exclude each other")
	}
	if c.NodeID == "" {
		bad("node-id", "required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	for key, d := range map[string]time.Duration{"drain-grace": c.DrainGrace, "udp-idle-timeout": c.UDPIdleTimeout, "dial-timeout": c.DialTimeout, "resync-interval": c.ResyncInterval} {
		if d <= 0 {
			bad(key, "must be a positive duration such as 30s")
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format", "%q is not text or json", c.LogFormat)
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

func parseRange(s string) (int32, int32, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return 0, 0, fmt.Errorf("%q is not a port range such as 30000-32767", s)
	}
	return int32(a), int32(b), nil
}

func (c *config) nodeAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range c.NodeAddresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

func (c *config) clusterConfig() *portalv1.ClusterConfig {
	return &portalv1.ClusterConfig{
		ServiceCidr:            c.ServiceCIDR,
		LbPool:                 c.LBPool,
		NodePortMin:            c.NodePortMin,
		NodePortMax:            c.NodePortMax,
		AllowLoopbackEndpoints: c.AllowLoopbackEndpoints,
	}
}
