package cluster

import (
	"fmt"
	"math/big"
	"net/netip"
)

// ipPool hands out addresses of a prefix by offset. Allocation scans from a
// cursor (the last offset handed out), so a freed address is reused only
// after the rest of the pool, and every node computes the same result.
type ipPool struct {
	prefix netip.Prefix
	lo, hi uint64 // usable offsets, inclusive
}

// maxPoolBits caps the scanned part of very large (IPv6) prefixes.
const maxPoolBits = 32

func newIPPool(s string) (ipPool, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return ipPool{}, err
	}
	p = p.Masked()
	host := p.Addr().BitLen() - p.Bits()
	if host > maxPoolBits {
		host = maxPoolBits
	}
	size := uint64(1) << host
	pool := ipPool{prefix: p, lo: 0, hi: size - 1}
	if p.Addr().Is4() && host >= 2 {
		pool.lo, pool.hi = 1, size-2 // network and broadcast addresses
	} else if p.Addr().Is6() && host >= 1 {
		pool.lo = 1 // subnet-router anycast address
	}
	return pool, nil
}

func (p ipPool) size() uint64 { return p.hi - p.lo + 1 }

func (p ipPool) addr(off uint64) netip.Addr {
	b := p.prefix.Addr().As16()
	n := new(big.Int).SetBytes(b[:])
	n.Add(n, new(big.Int).SetUint64(off))
	var out [16]byte
	n.FillBytes(out[:])
	a := netip.AddrFrom16(out)
	if p.prefix.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// offset returns the offset of a in the pool, and whether a is usable.
func (p ipPool) offset(a netip.Addr) (uint64, bool) {
	if !p.prefix.IsValid() || !p.prefix.Contains(a) {
		return 0, false
	}
	base := p.prefix.Addr().As16()
	aa := a.As16()
	d := new(big.Int).Sub(new(big.Int).SetBytes(aa[:]), new(big.Int).SetBytes(base[:]))
	if !d.IsUint64() {
		return 0, false
	}
	off := d.Uint64()
	return off, off >= p.lo && off <= p.hi
}

// scan returns the first offset after cursor (wrapping) for which free is
// true, or false when the pool is full.
func scan(lo, hi, cursor uint64, free func(uint64) bool) (uint64, bool) {
	if hi < lo {
		return 0, false
	}
	n := hi - lo + 1
	c := cursor
	if c < lo || c > hi {
		c = hi
	}
	for i := uint64(0); i < n; i++ {
		off := lo + (c-lo+1+i)%n
		if free(off) {
			return off, true
		}
	}
	return 0, false
}

func (p ipPool) String() string { return p.prefix.String() }

func rangeText(min, max int32) string { return fmt.Sprintf("%d-%d", min, max) }
