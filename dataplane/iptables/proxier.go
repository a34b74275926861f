//go:build linux

// Package iptables is portal's kernel dataplane in kube-proxy's iptables
// model: every sync is one atomic `iptables-restore --noflush` of the
// PORTAL- chains (nat and filter) that changed; a full sync rewrites them
// all periodically, and at once when the canary chain shows that someone
// flushed the tables.
package iptables

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portal-lb/portal/dataplane"
)

// Runner executes iptables commands. The real one runs the binaries; it is
// an interface so a test can count what a sync wrote.
type Runner interface {
	Restore(ctx context.Context, input []byte) error
	Save(ctx context.Context, table string) ([]byte, error)
	Run(ctx context.Context, args ...string) error
}

// ExecRunner runs iptables, iptables-save and iptables-restore from PATH;
// Command names another variant ("iptables-legacy", "iptables-nft").
type ExecRunner struct {
	Command string
}

func (r ExecRunner) bin(suffix string) string {
	if r.Command == "" {
		return "iptables" + suffix
	}
	return r.Command + suffix
}

func (r ExecRunner) Restore(ctx context.Context, input []byte) error {
	cmd := exec.CommandContext(ctx, r.bin("-restore"), "-w", "5", "--noflush")
	cmd.Stdin = bytes.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r ExecRunner) Save(ctx context.Context, table string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, r.bin("-save"), "-t", table).Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save -t %s: %v", table, err)
	}
	return out, nil
}

func (r ExecRunner) Run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, r.bin(""), append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Config configures the iptables dataplane.
type Config struct {
	Options
	// FullSyncPeriod bounds the time between full rewrites (default 1m).
	FullSyncPeriod time.Duration
	Runner         Runner
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Proxier is the iptables dataplane.
type Proxier struct {
	cfg Config
	log *slog.Logger
	run Runner

	mu         sync.Mutex
	written    Ruleset // what the last successful sync left in the kernel
	lastFull   time.Time
	lastCanary time.Time
	udp        map[udpTarget]bool // UDP frontend -> endpoint pairs programmed

	syncs *prometheus.CounterVec
	rules prometheus.Gauge
}

var _ dataplane.Interface = (*Proxier)(nil)

type udpTarget struct {
	frontend netip.AddrPort
	backend  netip.Addr
}

// New returns the iptables dataplane.
func New(cfg Config) *Proxier {
	if cfg.FullSyncPeriod <= 0 {
		cfg.FullSyncPeriod = time.Minute
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Proxier{
		cfg: cfg, log: cfg.Logger, run: cfg.Runner, udp: map[udpTarget]bool{},
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_iptables_syncs_total", Help: "iptables syncs by kind (full, partial, noop).",
		}, []string{"kind"}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portal_iptables_rules", Help: "Rules in PORTAL- chains."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(p.syncs, p.rules)
	}
	return p
}

// Sync programs desired. It writes only the chains that changed since the
// last sync, unless a full sync is due or the canary is gone.
func (p *Proxier) Sync(ctx context.Context, d *dataplane.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := Build(d, p.cfg.Options)
	full := p.written == nil || time.Since(p.lastFull) >= p.cfg.FullSyncPeriod
	// The canary costs two iptables runs, each reading the table: check it
	// at most once a second (the periodic resync always gets a check).
	if !full && time.Since(p.lastCanary) >= time.Second {
		p.lastCanary = time.Now()
		full = !p.canaryPresent(ctx)
	}
	var input strings.Builder
	for _, table := range []string{tableFilter, tableNAT} {
		var existing []string
		var jumped map[string]bool
		if full {
			// One save per table tells which PORTAL- chains exist (stale ones
			// are deleted) and which jumps from built-in chains are in place
			// (missing ones are inserted in the same transaction).
			var err error
			if existing, jumped, err = p.inspect(ctx, table); err != nil {
				return err
			}
		}
		changed, removed := p.diff(table, want, full, existing)
		missing := missingJumps(table, jumped, full)
		if len(changed) == 0 && len(removed) == 0 && len(missing) == 0 {
			continue
		}
		text := want.Restore(table, changed, removed)
		if input.Len() == 0 {
			input.Grow(2 * len(text))
		}
		input.WriteString(strings.TrimSuffix(text, "COMMIT\n"))
		for _, line := range missing {
			input.WriteString(line + "\n")
		}
		input.WriteString("COMMIT\n")
	}
	kind := "noop"
	if input.Len() > 0 {
		kind = "partial"
		if full {
			kind = "full"
		}
		if err := p.run.Restore(ctx, []byte(input.String())); err != nil {
			p.written = nil // the kernel state is unknown: next time, full
			return err
		}
	}
	if full {
		p.lastFull = time.Now()
		p.lastCanary = p.lastFull
	}
	p.written = want
	p.syncs.WithLabelValues(kind).Inc()
	n := 0
	for _, chains := range want {
		for _, rules := range chains {
			n += len(rules)
		}
	}
	p.rules.Set(float64(n))
	p.clearStaleUDP(d)
	return nil
}

// diff returns the chains of table to write and to delete. A full sync
// writes every chain and deletes every PORTAL- chain the kernel has
// (existing) that is not wanted.
func (p *Proxier) diff(table string, want Ruleset, full bool, existing []string) (changed, removed []string) {
	for c, rules := range want[table] {
		if full || !slices.Equal(p.written[table][c], rules) {
			changed = append(changed, c)
		} else if _, had := p.written[table][c]; !had {
			changed = append(changed, c)
		}
	}
	old := existing
	if !full {
		for c := range p.written[table] {
			old = append(old, c)
		}
	}
	for _, c := range old {
		if _, ok := want[table][c]; !ok {
			removed = append(removed, c)
		}
	}
	slices.Sort(changed)
	slices.Sort(removed)
	return changed, removed
}

// inspect reads a table: its PORTAL- chains, and the portal jumps present
// in built-in chains (keyed "CHAIN>TARGET").
func (p *Proxier) inspect(ctx context.Context, table string) ([]string, map[string]bool, error) {
	out, err := p.run.Save(ctx, table)
	if err != nil {
		return nil, nil, err
	}
	var chains []string
	jumped := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, ":PORTAL-"):
			chains = append(chains, strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A ") && strings.Contains(line, `--comment "portal `):
			f := strings.Fields(line)
			if len(f) > 2 && !strings.HasPrefix(f[1], "PORTAL-") && f[len(f)-2] == "-j" {
				jumped[f[1]+">"+f[len(f)-1]] = true
			}
		}
	}
	return chains, jumped, nil
}

// missingJumps renders restore lines inserting the jumps a full sync found
// missing.
func missingJumps(table string, jumped map[string]bool, full bool) []string {
	if !full {
		return nil
	}
	var out []string
	for _, j := range jumps {
		if j.table != table || jumped[j.chain+">"+j.target] {
			continue
		}
		args := jumpArgs(j.table, j.target)
		for i, a := range args {
			if strings.Contains(a, " ") {
				args[i] = strconv.Quote(a)
			}
		}
		out = append(out, "-I "+j.chain+" "+strings.Join(args, " "))
	}
	return out
}

// canaryPresent reports whether our canary rule survived: `iptables -F`
// (or a firewall reload) removes it, and the next sync is then full.
func (p *Proxier) canaryPresent(ctx context.Context) bool {
	for _, t := range []string{tableNAT, tableFilter} {
		if p.run.Run(ctx, "-t", t, "-C", chainCanary, "-j", "RETURN") != nil {
			if p.written != nil {
				p.log.Warn("portal's iptables rules were changed by someone else; rewriting them", "table", t)
			}
			return false
		}
	}
	return true
}

// clearStaleUDP deletes conntrack entries of UDP flows whose endpoint was
// removed from a frontend, so that their clients are not black-holed.
func (p *Proxier) clearStaleUDP(d *dataplane.Desired) {
	now := map[udpTarget]bool{}
	for _, v := range d.Servers {
		if v.Protocol != "UDP" {
			continue
		}
		for _, b := range v.Backends {
			now[udpTarget{frontend: v.Frontend, backend: b.Addr.Addr()}] = true
		}
	}
	for t := range p.udp {
		if now[t] || !t.frontend.Addr().Is4() {
			continue
		}
		f := &netlink.ConntrackFilter{}
		_ = f.AddProtocol(unix.IPPROTO_UDP)
		_ = f.AddIP(netlink.ConntrackOrigDstIP, net.IP(t.frontend.Addr().AsSlice()))
		_ = f.AddPort(netlink.ConntrackOrigDstPort, t.frontend.Port())
		_ = f.AddIP(netlink.ConntrackReplySrcIP, net.IP(t.backend.AsSlice()))
		if n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			p.log.Warn("deleting stale UDP conntrack entries", "frontend", t.frontend, "endpoint", t.backend, "err", err)
		} else if n > 0 {
			p.log.Debug("deleted stale UDP conntrack entries", "frontend", t.frontend, "endpoint", t.backend, "entries", n)
		}
	}
	p.udp = now
}

// Cleanup removes every PORTAL- chain and the jumps to them, and nothing
// else.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written = nil
	return Cleanup(ctx, p.run)
}

// Cleanup removes portal's chains and jumps using r (portald cleanup, and
// a node switching to another dataplane).
func Cleanup(ctx context.Context, r Runner) error {
	var input strings.Builder
	for _, table := range []string{tableFilter, tableNAT} {
		out, err := r.Save(ctx, table)
		if err != nil {
			return err
		}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, ":PORTAL-"):
				chains = append(chains, strings.Fields(line[1:])[0])
			case strings.HasPrefix(line, "-A ") && strings.Contains(line, " -j PORTAL-"):
				f := strings.Fields(line)
				if strings.HasPrefix(f[1], "PORTAL-") {
					continue // goes with its chain
				}
				// A jump from a built-in chain: delete it by its spec.
				if err := r.Run(ctx, append([]string{"-t", table, "-D", f[1]}, unquote(f[2:])...)...); err != nil {
					return err
				}
			}
		}
		if len(chains) == 0 {
			continue
		}
		input.WriteString("*" + table + "\n")
		for _, c := range chains {
			input.WriteString(":" + c + " - [0:0]\n")
		}
		for _, c := range chains {
			input.WriteString("-X " + c + "\n")
		}
		input.WriteString("COMMIT\n")
	}
	if input.Len() == 0 {
		return nil
	}
	return r.Restore(ctx, []byte(input.String()))
}

// unquote turns iptables-save's quoted comment words back into arguments.
func unquote(fields []string) []string {
	var out []string
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.HasPrefix(f, `"`) {
			words := []string{strings.TrimPrefix(f, `"`)}
			for !strings.HasSuffix(f, `"`) || len(words) == 1 && f == `"` {
				i++
				if i >= len(fields) {
					break
				}
				f = fields[i]
				words = append(words, f)
			}
			joined := strings.Join(words, " ")
			out = append(out, strings.TrimSuffix(joined, `"`))
			continue
		}
		out = append(out, f)
	}
	return out
}
