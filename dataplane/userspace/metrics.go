package userspace

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	active       *prometheus.GaugeVec
	total        *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	dialFailures *prometheus.CounterVec
	refused      *prometheus.CounterVec
	frontends    prometheus.Gauge

	mu     sync.Mutex
	byName map[string]*svcMetrics
}

// svcMetrics are one service port's resolved series: the data path only
// increments them (no label lookups per connection or packet).
type svcMetrics struct {
	active                            prometheus.Gauge
	total, bytesIn, bytesOut          prometheus.Counter
	dialFailures                      prometheus.Counter
	refusedNoEndpoints, refusedSource prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portal_userspace_connections_active", Help: "Open proxied connections (UDP: flows) by service port.",
		}, []string{"service"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_userspace_connections_total", Help: "Proxied connections (UDP: flows) by service port.",
		}, []string{"service"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_userspace_bytes_total", Help: "Bytes proxied by service port; direction in = client to backend.",
		}, []string{"service", "direction"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_userspace_dial_failures_total", Help: "Backend dials that failed (the connection was retried elsewhere when possible).",
		}, []string{"service"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_userspace_refused_total", Help: "Connections refused: no_endpoints, or source (outside loadBalancerSourceRanges).",
		}, []string{"service", "reason"}),
		frontends: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portal_userspace_frontends", Help: "Listening frontends."}),
		byName:    map[string]*svcMetrics{},
	}
	if r != nil {
		r.MustRegister(m.active, m.total, m.bytes, m.dialFailures, m.refused, m.frontends)
	}
	return m
}

func (m *metrics) forService(name string) *svcMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.byName[name]; s != nil {
		return s
	}
	s := &svcMetrics{
		active:             m.active.WithLabelValues(name),
		total:              m.total.WithLabelValues(name),
		bytesIn:            m.bytes.WithLabelValues(name, "in"),
		bytesOut:           m.bytes.WithLabelValues(name, "out"),
		dialFailures:       m.dialFailures.WithLabelValues(name),
		refusedNoEndpoints: m.refused.WithLabelValues(name, "no_endpoints"),
		refusedSource:      m.refused.WithLabelValues(name, "source"),
	}
	m.byName[name] = s
	return s
}
