package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portal-lb/portal/dataplane"
)

// Chains of kube-proxy's model, prefixed PORTAL-.
const (
	chainServices    = "PORTAL-SERVICES"    // nat: frontends -> SVC/EXT; filter: REJECT without endpoints
	chainNodePorts   = "PORTAL-NODEPORTS"   // nat: node address:nodePort -> EXT
	chainPostrouting = "PORTAL-POSTROUTING" // nat: MASQUERADE what is marked
	chainMarkMasq    = "PORTAL-MARK-MASQ"   // nat: mark for masquerade
	chainFirewall    = "PORTAL-FIREWALL"    // filter: LB source ranges -> FW chains
	chainCanary      = "PORTAL-CANARY"      // both: detects a flush by someone else

	masqMark = "0x4000"
)

const (
	tableNAT    = "nat"
	tableFilter = "filter"
)

// jumps are the rules portal keeps in the built-in chains.
var jumps = []struct{ table, chain, target string }{
	{tableNAT, "PREROUTING", chainServices},
	{tableNAT, "OUTPUT", chainServices},
	{tableNAT, "POSTROUTING", chainPostrouting},
	{tableFilter, "INPUT", chainFirewall},
	{tableFilter, "FORWARD", chainFirewall},
	{tableFilter, "OUTPUT", chainFirewall},
	{tableFilter, "INPUT", chainServices},
	{tableFilter, "FORWARD", chainServices},
	{tableFilter, "OUTPUT", chainServices},
}

// jumpArgs is the rule spec of a jump (for -C, -I and -D).
func jumpArgs(table, target string) []string {
	args := []string{"-m", "comment", "--comment", "portal " + strings.ToLower(strings.TrimPrefix(target, "PORTAL-"))}
	if table == tableFilter {
		args = append(args, "-m", "conntrack", "--ctstate", "NEW")
	}
	return append(args, "-j", target)
}

// Options of rule generation.
type Options struct {
	// ClusterCIDR: ClusterIP traffic from outside it is masqueraded.
	ClusterCIDR netip.Prefix
	// MasqueradeAll masquerades all ClusterIP traffic.
	MasqueradeAll bool
}

// Ruleset is the content of every PORTAL- chain, by table and chain.
type Ruleset map[string]map[string][]string

func (r Ruleset) add(table, chain string, rule ...string) {
	if r[table] == nil {
		r[table] = map[string][]string{}
	}
	line := "-A " + chain
	if len(rule) > 0 {
		line += " " + strings.Join(rule, " ")
	}
	r[table][chain] = append(r[table][chain], line)
}

// chain declares an empty chain (so it exists even without rules).
func (r Ruleset) chain(table, chain string) {
	if r[table] == nil {
		r[table] = map[string][]string{}
	}
	if _, ok := r[table][chain]; !ok {
		r[table][chain] = []string{}
	}
}

// hashName names a chain after what it serves: base32 of sha256, cut to
// fit iptables' 28-character limit.
func hashName(prefix string, parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var enc [56]byte
	base32.StdEncoding.Encode(enc[:], sum[:])
	return prefix + string(enc[:28-len(prefix)-1])
}

// group is one service port and protocol: the unit kube-proxy names chains by.
type group struct {
	service, port, proto string
	cluster              *dataplane.VirtualServer   // the ClusterIP frontend, if any
	external             []*dataplane.VirtualServer // NodePort, ExternalIP, LoadBalancer
	comment              string                     // "-m comment --comment ..." for its rules
}

func (g *group) id() string { return g.service + ":" + g.port + "/" + g.proto }

// frontend matches a frontend, commented, in the order iptables-save
// prints rules (addresses and protocol first, then the matches in order),
// so that what the kernel holds reads exactly as what was written.
func (g *group) frontend(prefix string, ip netip.Addr, port uint16) string {
	return prefix + "-d " + ip.String() + "/32 -p " + g.proto + " " + g.comment + " -m " + g.proto + " --dport " + strconv.Itoa(int(port))
}

// rule appends a pre-joined rule to a chain.
func (r Ruleset) rule(table, chain, spec string) {
	if r[table] == nil {
		r[table] = map[string][]string{}
	}
	r[table][chain] = append(r[table][chain], "-A "+chain+" "+spec)
}

// Build generates the ruleset for desired (IPv4 frontends and backends).
func Build(d *dataplane.Desired, o Options) Ruleset {
	r := Ruleset{}
	for _, t := range []string{tableNAT, tableFilter} {
		for _, c := range []string{chainServices, chainCanary} {
			r.chain(t, c)
		}
		r.add(t, chainCanary, "-j", "RETURN")
	}
	r.chain(tableFilter, chainFirewall)
	r.chain(tableNAT, chainNodePorts)
	// --set-xmark is how iptables-save prints --or-mark (v/v) and --xor-mark (v/0).
	r.add(tableNAT, chainMarkMasq, "-j", "MARK", "--set-xmark", masqMark+"/"+masqMark)
	r.add(tableNAT, chainPostrouting, "-m", "mark", "!", "--mark", masqMark+"/"+masqMark, "-j", "RETURN")
	r.add(tableNAT, chainPostrouting, "-j", "MARK", "--set-xmark", masqMark+"/0x0")
	r.add(tableNAT, chainPostrouting, "-m", "comment", "--comment", `"portal service traffic requiring SNAT"`, "-j", "MASQUERADE", "--random-fully")

	groups := map[string]*group{}
	var order []string
	for _, v := range d.Servers {
		if !v.Frontend.Addr().Is4() {
			continue
		}
		k := v.Service + ":" + v.Port + "/" + v.Protocol
		g := groups[k]
		if g == nil {
			g = &group{service: v.Service, port: v.Port, proto: strings.ToLower(v.Protocol)}
			g.comment = "-m comment --comment " + strconv.Quote(g.id())
			groups[k] = g
			order = append(order, k)
		}
		if v.Kind == dataplane.KindClusterIP {
			g.cluster = v
		} else {
			g.external = append(g.external, v)
		}
	}
	slices.Sort(order)
	var nodePorts []string // appended after every service rule
	masqueradeFrom := ""
	if o.ClusterCIDR.IsValid() {
		masqueradeFrom = "! -s " + o.ClusterCIDR.String() + " "
	}
	for _, k := range order {
		g := groups[k]
		svcChain := hashName("PORTAL-SVC-", g.id())
		if v := g.cluster; v != nil {
			m := g.frontend("", v.Frontend.Addr(), v.Frontend.Port())
			if len(backends4(v)) == 0 {
				r.rule(tableFilter, chainServices, m+" -j REJECT --reject-with icmp-port-unreachable")
			} else {
				r.balance(g, svcChain, v, backends4(v))
				if o.MasqueradeAll {
					r.rule(tableNAT, chainServices, m+" -j "+chainMarkMasq)
				} else if masqueradeFrom != "" {
					r.rule(tableNAT, chainServices, g.frontend(masqueradeFrom, v.Frontend.Addr(), v.Frontend.Port())+" -j "+chainMarkMasq)
				}
				r.rule(tableNAT, chainServices, m+" -j "+svcChain)
			}
		}
		if len(g.external) == 0 {
			continue
		}
		// External frontends share one EXT chain: masquerade and balance
		// over every endpoint (Cluster), or keep the client address and use
		// this node's endpoints (Local).
		ext := g.external[0]
		extBackends := backends4(ext)
		extChain := hashName("PORTAL-EXT-", g.id())
		if len(extBackends) > 0 {
			if ext.Local {
				svl := hashName("PORTAL-SVL-", g.id())
				r.balance(g, svl, ext, extBackends)
				r.rule(tableNAT, extChain, g.comment+" -j "+svl)
			} else {
				r.rule(tableNAT, extChain, g.comment+" -j "+chainMarkMasq)
				if g.cluster == nil || !slices.Equal(backends4(g.cluster), extBackends) {
					r.balance(g, svcChain, ext, extBackends)
				}
				r.rule(tableNAT, extChain, g.comment+" -j "+svcChain)
			}
		}
		for _, v := range g.external {
			m := g.frontend("", v.Frontend.Addr(), v.Frontend.Port())
			if len(extBackends) == 0 {
				r.rule(tableFilter, chainServices, m+" -j REJECT --reject-with icmp-port-unreachable")
				continue
			}
			if v.Kind == dataplane.KindNodePort {
				nodePorts = append(nodePorts, m+" -j "+extChain)
			} else {
				r.rule(tableNAT, chainServices, m+" -j "+extChain)
			}
			if v.Kind == dataplane.KindLoadBalancer && len(v.SourceRanges) > 0 {
				fw := hashName("PORTAL-FW-", g.id(), v.Frontend.String())
				for _, p := range v.SourceRanges {
					if p.Addr().Is4() {
						r.rule(tableFilter, fw, "-s "+p.String()+" "+g.comment+" -j RETURN")
					}
				}
				r.rule(tableFilter, fw, g.comment+" -j DROP")
				r.rule(tableFilter, chainFirewall, "-p "+g.proto+" "+g.comment+" -m conntrack --ctorigdst "+v.Frontend.Addr().String()+
					" --ctorigdstport "+strconv.Itoa(int(v.Frontend.Port()))+" -j "+fw)
			}
		}
	}
	for _, rule := range nodePorts {
		r.rule(tableNAT, chainNodePorts, rule)
	}
	r.add(tableNAT, chainServices, "-m", "comment", "--comment", `"portal node ports; keep last"`, "-m", "addrtype", "--dst-type", "LOCAL", "-j", chainNodePorts)
	return r
}

func backends4(v *dataplane.VirtualServer) []netip.AddrPort {
	var out []netip.AddrPort
	for _, b := range v.Backends {
		if b.Addr.Addr().Is4() {
			out = append(out, b.Addr)
		}
	}
	return out
}

// balance writes a SVC-style chain choosing among backends with
// statistic probabilities 1/(n-i) (uniform), ClientIP affinity first.
func (r Ruleset) balance(g *group, chain string, v *dataplane.VirtualServer, backends []netip.AddrPort) {
	if _, done := r[tableNAT][chain]; done {
		return
	}
	seps := make([]string, len(backends))
	for i, b := range backends {
		seps[i] = hashName("PORTAL-SEP-", g.id(), b.String())
		r.sep(g, seps[i], b, v.Affinity)
	}
	if v.Affinity > 0 {
		secs := strconv.Itoa(int(v.Affinity.Seconds()))
		for _, sep := range seps {
			r.rule(tableNAT, chain, g.comment+" -m recent --rcheck --seconds "+secs+" --reap --name "+sep+" --mask 255.255.255.255 --rsource -j "+sep)
		}
	}
	n := len(seps)
	for i, sep := range seps {
		if i < n-1 {
			r.rule(tableNAT, chain, g.comment+" -m statistic --mode random --probability "+probability(n-i)+" -j "+sep)
		} else {
			r.rule(tableNAT, chain, g.comment+" -j "+sep)
		}
	}
}

// probability formats 1/n as iptables-save prints it.
func probability(n int) string {
	return strconv.FormatFloat(1.0/float64(n), 'f', 11, 64)
}

func (r Ruleset) sep(g *group, chain string, b netip.AddrPort, affinity time.Duration) {
	if _, done := r[tableNAT][chain]; done {
		return
	}
	// Hairpin: a backend reaching itself through the service is masqueraded.
	r.rule(tableNAT, chain, "-s "+b.Addr().String()+"/32 "+g.comment+" -j "+chainMarkMasq)
	recent := ""
	if affinity > 0 {
		recent = " -m recent --set --name " + chain + " --mask 255.255.255.255 --rsource"
	}
	r.rule(tableNAT, chain, "-p "+g.proto+" "+g.comment+recent+" -m "+g.proto+" -j DNAT --to-destination "+b.String())
}

// Restore renders the iptables-restore input for the given chains of a
// table: declarations (which flush the chain), then rules; removed chains
// are flushed and deleted.
func (r Ruleset) Restore(table string, chains []string, removed []string) string {
	size := len(table) + 16
	for _, c := range chains {
		size += len(c) + 10
		for _, line := range r[table][c] {
			size += len(line) + 1
		}
	}
	for _, c := range removed {
		size += 2*len(c) + 14
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString("*" + table + "\n")
	for _, c := range chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range removed {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range chains {
		for _, line := range r[table][c] {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	for _, c := range removed {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
