package labha

import "net/netip"

// Event names: the message of every log record the Home Agent emits. With
// cmd/labha each record is one JSON line, e.g.
//
//	{"time":"...","level":"INFO","msg":"ba-sent","hoa":"2001:db8:2000::10","coa":"2001:db8:3000::3","status":0,"seq":7,"lifetime":15}
//
// Attributes (present where they apply): hoa, coa, old_coa (addresses);
// seq, flags, lifetime (wire values, lifetime in 4-second units);
// lifetime_s (seconds); status; reason; duplicate (DAD outcome); elapsed_ms;
// expires (RFC 3339); esp_seq, the ESP sequence number of a Binding Update
// received or an Ack sent under ESP. With an IPv4 home prefix (RFC 5555):
// hoa4, the IPv4 home address the event is about (asked, acknowledged,
// bound or released); hoa4_prefix_len, the Prefix-len asked; ipv4_status,
// the IPv4 Address Acknowledgement's status; old_hoa4, an IPv4 home address
// a binding no longer holds.
const (
	// EventReady is logged once the Home Agent listens; tests wait for it.
	// Its ipsec attribute lists the home addresses with SAs, ipv4_prefix
	// the IPv4 home subnet ("" without RFC 5555).
	EventReady = "ready"
	// EventBUReceived: a Binding Update for this Home Agent was decoded
	// (hoa, coa, seq, flags, lifetime, lifetime_s).
	EventBUReceived = "bu-received"
	// EventBUDropped: a Binding Update was discarded without answer (reason,
	// and what could be decoded). When IPsec dropped it, reason is one of
	// the Reason constants and detail the error.
	EventBUDropped = "bu-dropped"
	// EventBASent: a Binding Acknowledgement left (hoa, coa, status, seq,
	// lifetime; hoa4 and ipv4_status when it carries an IPv4 Address
	// Acknowledgement).
	EventBASent = "ba-sent"
	// EventDADStart and EventDADDone bracket Duplicate Address Detection
	// for a first registration (hoa; duplicate and elapsed_ms when done).
	EventDADStart = "dad-start"
	EventDADDone  = "dad-done"
	// EventBindingAdded, EventBindingRefreshed, EventBindingMoved,
	// EventBindingRemoved and EventBindingExpired report binding cache
	// changes (hoa, coa, old_coa for moves, seq, lifetime_s, expires; hoa4,
	// ipv4_status, old_hoa4 where the binding has or had an IPv4 home
	// address or the Binding Update asked for one).
	EventBindingAdded     = "binding-added"
	EventBindingRefreshed = "binding-refreshed"
	EventBindingMoved     = "binding-moved"
	EventBindingRemoved   = "binding-removed"
	EventBindingExpired   = "binding-expired"
	// EventNASent: the unsolicited proxy Neighbor Advertisement for a new
	// binding went out (hoa, router, override).
	EventNASent = "na-sent"
	// EventTunnelDrop: a data packet was dropped (reason), logged for the
	// first few drops only.
	EventTunnelDrop = "tunnel-drop"
	// EventTunnelRefused: a Destination Unreachable went back for a
	// tunnelled packet no binding takes (coa), within the ICMPv6 rate limit.
	EventTunnelRefused = "tunnel-refused"
	// EventError: an I/O error that did not stop the Home Agent (reason).
	EventError = "error"
	// EventStopped is logged on exit with the data-plane counters
	// (tunnel_out, tunnel_in, rh2_out, tunnel_out_dropped, tunnel_in_dropped).
	EventStopped = "stopped"
)

// bindingEvent maps a binding cache action to its event name.
func bindingEvent(a Action) string {
	switch a {
	case Add:
		return EventBindingAdded
	case Refresh:
		return EventBindingRefreshed
	case Move:
		return EventBindingMoved
	case Remove:
		return EventBindingRemoved
	}
	return ""
}

// ipv4Attrs are the IPv4 attributes of a binding event for decision d.
func ipv4Attrs(d Decision) []any {
	var attrs []any
	switch {
	case d.Ack.IPv4.Present:
		attrs = append(attrs, "hoa4", d.Ack.IPv4.Address.String(), "ipv4_status", d.Ack.IPv4.Status)
	case d.Binding.IPv4HomeAddress.IsValid():
		attrs = append(attrs, "hoa4", d.Binding.IPv4HomeAddress.String())
	case d.Action == Remove && d.OldIPv4HomeAddress.IsValid():
		return append(attrs, "hoa4", d.OldIPv4HomeAddress.String())
	}
	if d.OldIPv4HomeAddress.IsValid() {
		attrs = append(attrs, "old_hoa4", d.OldIPv4HomeAddress.String())
	}
	return attrs
}

// ipv4PrefixString returns p in text, "" for the zero Prefix.
func ipv4PrefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
