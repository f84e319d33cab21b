package labha

import "testing"

func TestReplayWindow(t *testing.T) {
	for _, tc := range []struct {
		name string
		seen []uint32 // accepted in this order beforehand
		seq  uint32
		want bool
	}{
		{"first packet", nil, 1, true},
		{"first packet after a gap", nil, 1000, true},
		{"sequence number 0", nil, 0, false},
		{"sequence number 0 later", []uint32{5}, 0, false},
		{"next", []uint32{1}, 2, true},
		{"same again", []uint32{1}, 1, false},
		{"highest again", []uint32{1, 2, 3}, 3, false},
		{"gap ahead", []uint32{1}, 40, true},
		{"late, in the window, unseen", []uint32{1, 10}, 5, true},
		{"late, in the window, seen", []uint32{1, 5, 10}, 5, false},
		{"lowest in the window", []uint32{40}, 40 - ReplayWindowSize + 1, true},
		{"just below the window", []uint32{40}, 40 - ReplayWindowSize, false},
		{"far below", []uint32{1000}, 3, false},
		{"below after a jump beyond the window", []uint32{1, 2, 100}, 2, false},
		{"in the window after a jump within it", []uint32{1, 2, 20}, 2, false},
		{"unseen in the window after a jump within it", []uint32{1, 2, 20}, 3, true},
		{"filled in from below", []uint32{10, 8, 9}, 8, false},
		{"highest possible", []uint32{1}, ^uint32(0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w ReplayWindow
			for _, s := range tc.seen {
				if !w.Accept(s) {
					t.Fatalf("got Accept(%d) = false while setting up %v, want true", s, tc.seen)
				}
			}
			before := w
			if got := w.Check(tc.seq); got != tc.want {
				t.Errorf("got Check(%d) = %v after %v, want %v", tc.seq, got, tc.seen, tc.want)
			}
			if w != before {
				t.Errorf("got window %+v after Check, want it unchanged %+v", w, before)
			}
			if got := w.Accept(tc.seq); got != tc.want {
				t.Errorf("got Accept(%d) = %v after %v, want %v", tc.seq, got, tc.seen, tc.want)
			}
			if !tc.want && w != before {
				t.Errorf("got window %+v after refusing %d, want it unchanged %+v", w, tc.seq, before)
			}
			if w.Accept(tc.seq) {
				t.Errorf("got Accept(%d) = true a second time, want false", tc.seq)
			}
		})
	}
}

// TestReplayWindowSlides checks a long run against a model that remembers
// everything: the window takes exactly what is above the highest or within
// 32 below it and new.
func TestReplayWindowSlides(t *testing.T) {
	var w ReplayWindow
	seen := map[uint32]bool{}
	var top uint32
	// A sender with reordering and loss: each step sends seq, a few steps
	// back, and duplicates.
	var seqs []uint32
	for s := uint32(1); s < 400; s += 3 {
		seqs = append(seqs, s, s+1, s-1, s+40, s, s+2)
	}
	for _, s := range seqs {
		want := s != 0 && !seen[s] && (s > top || top-s < ReplayWindowSize)
		if got := w.Accept(s); got != want {
			t.Fatalf("got Accept(%d) = %v with highest %d, want %v", s, got, top, want)
		}
		if want {
			seen[s] = true
			top = max(top, s)
		}
	}
}
