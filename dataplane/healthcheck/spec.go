package healthcheck

import (
	"time"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Defaults of spec.healthCheck (the server applies them; CheckOf again,
// for objects written before a default existed).
const (
	DefaultIntervalMillis     = portalv1.DefaultHealthIntervalMillis
	DefaultTimeoutMillis      = portalv1.DefaultHealthTimeoutMillis
	DefaultHealthyThreshold   = portalv1.DefaultHealthyThreshold
	DefaultUnhealthyThreshold = portalv1.DefaultUnhealthyThreshold
	DefaultExpectedCodes      = portalv1.DefaultExpectedCodes
	FailOpen                  = portalv1.AllUnhealthyFailOpen
	Refuse                    = portalv1.AllUnhealthyRefuse
)

// CheckOf turns a (defaulted) spec.healthCheck into a Check; false when the
// service has no active check.
func CheckOf(hc *portalv1.HealthCheck) (Check, bool) {
	if hc == nil || hc.GetType() == "NONE" {
		return Check{}, false
	}
	c := Check{
		Type: hc.GetType(), Path: hc.GetPath(), Host: hc.GetHost(), ExpectedCodes: hc.GetExpectedCodes(),
		Service: hc.GetService(), Send: hc.GetSend(), Expect: hc.GetExpect(),
		Interval: time.Duration(hc.GetIntervalMillis()) * time.Millisecond,
		Timeout:  time.Duration(hc.GetTimeoutMillis()) * time.Millisecond,
		Rise:     int(hc.GetHealthyThreshold()), Fall: int(hc.GetUnhealthyThreshold()),
	}
	if c.Type == "" {
		c.Type = "TCP"
	}
	if c.Interval <= 0 {
		c.Interval = DefaultIntervalMillis * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeoutMillis * time.Millisecond
	}
	if c.Rise <= 0 {
		c.Rise = DefaultHealthyThreshold
	}
	if c.Fall <= 0 {
		c.Fall = DefaultUnhealthyThreshold
	}
	if (c.Type == "HTTP" || c.Type == "HTTPS") && c.ExpectedCodes == "" {
		c.ExpectedCodes = DefaultExpectedCodes
	}
	return c, true
}
