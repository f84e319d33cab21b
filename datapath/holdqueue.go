package datapath

import "time"

// holdQueue is the data half every hold shares: frames waiting in the order
// they came, bounded in number, in bytes and in age, with every frame that is
// not sent on counted as dropped. Its owner's mutex guards it.
type holdQueue struct {
	maxFrames int
	maxBytes  int // 0: bounded by maxFrames alone
	maxHold   time.Duration
	counters  *Counters
	// front is the spare room kept before each frame held, so that a header
	// can later be written in place.
	front int

	frames [][]byte
	at     []time.Time
	bytes  int // of the frames held, front room not included
}

// push holds a copy of frame. Frames older than maxHold go first:
// their sender retransmits by now, and a stale frame released late only
// confuses it. A frame beyond the bounds is dropped, not an older one: what
// is held is sent on in order, and a gap at the end is one the sender's
// retransmission fills.
func (q *holdQueue) push(now time.Time, frame []byte) {
	for len(q.frames) > 0 && now.Sub(q.at[0]) > q.maxHold {
		q.popFront()
		q.counters.Drop(DropHoldExpired)
	}
	if len(q.frames) >= q.maxFrames || (q.maxBytes > 0 && q.bytes+len(frame) > q.maxBytes) {
		q.counters.Drop(DropHoldOverflow)
		return
	}
	held := make([]byte, q.front+len(frame))
	copy(held[q.front:], frame)
	q.frames = append(q.frames, held)
	q.at = append(q.at, now)
	q.bytes += len(frame)
	q.counters.Held.Add(1)
}

// popFront forgets the oldest frame; the slot is cleared so the frame's
// memory goes with it.
func (q *holdQueue) popFront() {
	q.bytes -= len(q.frames[0]) - q.front
	q.frames[0] = nil
	q.frames, q.at = q.frames[1:], q.at[1:]
}

// drain hands every frame held no longer than maxHold to send, oldest first
// (with its front room), counts the others as expired and empties the
// queue.
func (q *holdQueue) drain(now time.Time, send func(frame []byte)) {
	for i, fr := range q.frames {
		if now.Sub(q.at[i]) > q.maxHold {
			q.counters.Drop(DropHoldExpired)
			continue
		}
		send(fr)
	}
	q.reset()
}

// discard counts every frame still held as expired (its hold ends without a
// way out: nothing is dropped silently) and empties the queue.
func (q *holdQueue) discard() {
	q.counters.Drops[DropHoldExpired].Add(uint64(len(q.frames)))
	q.reset()
}

func (q *holdQueue) reset() { q.frames, q.at, q.bytes = nil, nil, 0 }
