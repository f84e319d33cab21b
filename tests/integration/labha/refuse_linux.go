package labha

import (
	"context"
	"net/netip"
	"time"
)

// refuseTunnel answers a tunnelled packet from coa that no binding's tunnel
// takes as a Home Agent's kernel does (TunnelUnreachable), within Linux's
// ICMPv6 rate limit. After a restart this is all a mobile node hears until
// it registers again.
func (h *HomeAgent) refuseTunnel(ctx context.Context, limiter *errorLimiter, coa netip.Addr, inner []byte) {
	if !limiter.allow(coa, time.Now()) {
		return
	}
	pkt := TunnelUnreachable(nil, h.cfg.Addr, coa, inner)
	if err := h.raw.send(ctx, pkt, coa); err != nil {
		h.log.Info(EventError, "coa", coa.String(), "reason", "send Destination Unreachable: "+err.Error())
		return
	}
	h.log.Info(EventTunnelRefused, "coa", coa.String())
}
