//go:build linux

package iptables

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Fake is a stateful, goroutine-safe Runner that keeps nat and filter
// tables in memory, with iptables-restore --noflush semantics (a declared
// user chain is flushed; a transaction applies whole or not at all). Unit
// tests use it without root; TestFakeMatchesKernel checks it against the
// real iptables.
type Fake struct {
	mu       sync.Mutex
	tables   map[string]*fakeTable
	Restores int // successful restores so far
}

var _ Runner = (*Fake)(nil)

type fakeTable struct {
	builtin []string            // in iptables-save order
	chains  map[string][]string // chain -> rules, as "-A CHAIN spec"
	user    []string            // user chains in creation order
}

var builtins = map[string][]string{
	tableNAT:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	tableFilter: {"INPUT", "FORWARD", "OUTPUT"},
}

// NewFake returns empty nat and filter tables.
func NewFake() *Fake {
	f := &Fake{tables: map[string]*fakeTable{}}
	for t, bs := range builtins {
		ft := &fakeTable{builtin: bs, chains: map[string][]string{}}
		for _, b := range bs {
			ft.chains[b] = nil
		}
		f.tables[t] = ft
	}
	return f
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{builtin: t.builtin, chains: map[string][]string{}, user: slices.Clone(t.user)}
	for k, v := range t.chains {
		c.chains[k] = slices.Clone(v)
	}
	return c
}

func (t *fakeTable) isBuiltin(c string) bool { return slices.Contains(t.builtin, c) }

// referenced reports whether a rule of another chain jumps to c.
func (t *fakeTable) referenced(c string) bool {
	for other, rules := range t.chains {
		if other == c {
			continue
		}
		for _, r := range rules {
			if strings.HasSuffix(r, " -j "+c) || strings.Contains(r, " -j "+c+" ") {
				return true
			}
		}
	}
	return false
}

// Restore applies iptables-restore --noflush input.
func (f *Fake) Restore(_ context.Context, input []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cur *fakeTable
	var name string
	staged := map[string]*fakeTable{}
	sc := bufio.NewScanner(strings.NewReader(string(input)))
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		fail := func(format string, args ...any) error {
			return fmt.Errorf("iptables-restore (fake): line %d: %s", n, fmt.Sprintf(format, args...))
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			name = line[1:]
			t := f.tables[name]
			if t == nil {
				return fail("unknown table %q", name)
			}
			cur = t.clone()
		case line == "COMMIT":
			if cur == nil {
				return fail("COMMIT outside a table")
			}
			staged[name], cur = cur, nil
		case cur == nil:
			return fail("rule outside a table")
		case strings.HasPrefix(line, ":"):
			chain := strings.Fields(line[1:])[0]
			if cur.isBuiltin(chain) {
				continue // a policy line: builtins are never flushed with --noflush
			}
			if _, ok := cur.chains[chain]; !ok {
				cur.user = append(cur.user, chain)
			}
			cur.chains[chain] = nil
		case strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "-I "):
			f := strings.Fields(line)
			if len(f) < 2 {
				return fail("no chain")
			}
			chain := f[1]
			rules, ok := cur.chains[chain]
			if !ok {
				return fail("no chain %q", chain)
			}
			spec := f[2:]
			if strings.HasPrefix(line, "-I ") {
				if len(spec) > 0 {
					if _, err := strconv.Atoi(spec[0]); err == nil {
						spec = spec[1:]
					}
				}
				if target := jumpTarget(spec); target != "" && !cur.exists(target) {
					return fail("no chain %q to jump to", target)
				}
				cur.chains[chain] = append([]string{"-A " + chain + " " + strings.Join(spec, " ")}, rules...)
			} else {
				if target := jumpTarget(spec); target != "" && !cur.exists(target) {
					return fail("no chain %q to jump to", target)
				}
				cur.chains[chain] = append(rules, line)
			}
		case strings.HasPrefix(line, "-X "):
			chain := strings.TrimSpace(line[3:])
			if len(cur.chains[chain]) > 0 || cur.referenced(chain) {
				return fail("chain %q is not empty or still referenced", chain)
			}
			delete(cur.chains, chain)
			cur.user = slices.DeleteFunc(cur.user, func(c string) bool { return c == chain })
		default:
			return fail("unsupported line %q", line)
		}
	}
	if cur != nil {
		return fmt.Errorf("iptables-restore (fake): table %s without COMMIT", name)
	}
	for n, t := range staged {
		f.tables[n] = t
	}
	f.Restores++
	return nil
}

func (t *fakeTable) exists(chain string) bool {
	if chain == "RETURN" || chain == "ACCEPT" || chain == "DROP" || chain == "REJECT" || chain == "DNAT" ||
		chain == "MASQUERADE" || chain == "MARK" || chain == "SNAT" {
		return true
	}
	_, ok := t.chains[chain]
	return ok
}

// jumpTarget is the -j argument of a rule spec.
func jumpTarget(spec []string) string {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" {
			return spec[i+1]
		}
	}
	return ""
}

// Save renders a table as iptables-save does (user chains after the
// built-in ones, rules in order).
func (f *Fake) Save(_ context.Context, table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil {
		return nil, fmt.Errorf("iptables-save (fake): unknown table %q", table)
	}
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for _, c := range t.builtin {
		b.WriteString(":" + c + " ACCEPT [0:0]\n")
	}
	for _, c := range t.user {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range append(slices.Clone(t.builtin), t.user...) {
		for _, r := range t.chains[c] {
			b.WriteString(r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), nil
}

// Run supports -t TABLE with -C, -I and -D of a rule spec.
func (f *Fake) Run(_ context.Context, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	table := tableFilter
	if len(args) >= 2 && args[0] == "-t" {
		table, args = args[1], args[2:]
	}
	t := f.tables[table]
	if t == nil || len(args) < 2 {
		return fmt.Errorf("iptables (fake): bad arguments %v", args)
	}
	op, chain, spec := args[0], args[1], args[2:]
	rules, ok := t.chains[chain]
	if !ok {
		return fmt.Errorf("iptables (fake): no chain %q", chain)
	}
	rule := "-A " + chain + " " + renderSpec(spec)
	idx := slices.Index(rules, rule)
	switch op {
	case "-C":
		if idx < 0 {
			return fmt.Errorf("iptables (fake): no such rule")
		}
	case "-I":
		t.chains[chain] = append([]string{rule}, rules...)
	case "-D":
		if idx < 0 {
			return fmt.Errorf("iptables (fake): no such rule")
		}
		t.chains[chain] = slices.Delete(rules, idx, idx+1)
	default:
		return fmt.Errorf("iptables (fake): unsupported %s", op)
	}
	return nil
}

// renderSpec quotes arguments with spaces, as iptables-save prints them.
func renderSpec(spec []string) string {
	out := make([]string, len(spec))
	for i, a := range spec {
		if strings.Contains(a, " ") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
