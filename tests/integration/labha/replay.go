package labha

// ReplayWindowSize is how many sequence numbers below the highest one seen
// an inbound SA still takes: 32, the window the Linux Home Agent's SAs
// were installed with (RFC 4303 §3.4.3 asks for at least 32).
const ReplayWindowSize = 32

// ReplayWindow is the anti-replay state of one inbound SA (RFC 4303
// §3.4.3), kept as Linux's xfrm_replay_check and xfrm_replay_advance keep
// it: a packet is new if its sequence number is above the highest seen, or
// within the ReplayWindowSize below it and not seen yet. Gaps are fine;
// sequence number 0 is never new. Sequence numbers are 32 bits without
// extended sequence numbers, so they never wrap: a sender that reached
// 2^32-1 needs a new SA. The zero value has seen nothing.
type ReplayWindow struct {
	top uint32 // highest sequence number recorded; 0 before the first
	// seen has bit i set when top-i was recorded (bit 0 is top itself).
	seen uint32
}

// Check reports whether seq is new, without recording it. A receiver checks
// before the integrity check, so that replays cost no cryptography, and
// records with Accept only what passed it.
func (w *ReplayWindow) Check(seq uint32) bool {
	switch {
	case seq == 0:
		return false
	case seq > w.top:
		return true
	}
	diff := w.top - seq
	return diff < ReplayWindowSize && w.seen&(1<<diff) == 0
}

// Accept records seq and reports whether it was new; a sequence number that
// was not leaves the window as it was.
func (w *ReplayWindow) Accept(seq uint32) bool {
	if !w.Check(seq) {
		return false
	}
	if seq > w.top {
		if shift := seq - w.top; shift < ReplayWindowSize {
			w.seen = w.seen<<shift | 1
		} else {
			w.seen = 1
		}
		w.top = seq
		return true
	}
	w.seen |= 1 << (w.top - seq)
	return true
}
