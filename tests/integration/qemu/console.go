package qemu

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ConsoleLine is one line the guest wrote on its console (ttyS0), with the
// time the host read it.
type ConsoleLine struct {
	At   time.Time
	Text string
}

// Heartbeat is one "hb N UPTIME" line of the guest's heartbeat (init.sh).
type Heartbeat struct {
	// N counts heartbeats since boot; a migrated guest carries on counting.
	N int
	// Uptime is the guest's /proc/uptime when it wrote the line.
	Uptime float64
	// At is when the host read the line.
	At time.Time
}

// readyMarker starts the line init.sh prints once eth0 is configured.
const readyMarker = "kgs-guest ready"

var hbRe = regexp.MustCompile(`^hb ([0-9]+) ([0-9.]+)$`)

// crashRe matches the kernel's words for a crash (an emulated guest may
// rarely crash right after it resumes on the destination).
var crashRe = regexp.MustCompile(`Oops|Kernel panic|BUG: |general protection fault|Call Trace:|invalid opcode`)

// console records what the guest writes on ttyS0: every line, its heartbeats
// and when it became ready.
type console struct {
	mu     sync.Mutex
	lines  []ConsoleLine
	hbs    []Heartbeat
	ready  time.Time
	notify chan struct{} // closed and replaced on each line
	closed bool
}

func newConsole() *console { return &console{notify: make(chan struct{})} }

// run reads r until it fails, copying each line, timestamped, to log.
func (c *console) run(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		c.add(time.Now(), sc.Text(), log)
	}
	c.mu.Lock()
	c.closed = true
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

func (c *console) add(at time.Time, text string, log io.Writer) {
	text = strings.TrimRight(text, "\r")
	if log != nil {
		fmt.Fprintf(log, "%s %s\n", at.Format("15:04:05.000"), text)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, ConsoleLine{At: at, Text: text})
	if m := hbRe.FindStringSubmatch(text); m != nil {
		n, _ := strconv.Atoi(m[1])
		up, _ := strconv.ParseFloat(m[2], 64)
		c.hbs = append(c.hbs, Heartbeat{N: n, Uptime: up, At: at})
	}
	if c.ready.IsZero() && strings.HasPrefix(text, readyMarker) {
		c.ready = at
	}
	close(c.notify)
	c.notify = make(chan struct{})
}

// wait calls cond under the lock after every line until it returns true,
// the console closes or done is closed.
func (c *console) wait(done <-chan struct{}, cond func() bool) bool {
	for {
		c.mu.Lock()
		ok, notify, closed := cond(), c.notify, c.closed
		c.mu.Unlock()
		if ok {
			return true
		}
		if closed {
			return false
		}
		select {
		case <-notify:
		case <-done:
			return false
		}
	}
}

// summary renders the console for a test log: runs of heartbeat lines are
// folded into one line each, everything else is kept.
func summary(lines []ConsoleLine) string {
	var b strings.Builder
	for i := 0; i < len(lines); {
		if !hbRe.MatchString(lines[i].Text) {
			fmt.Fprintf(&b, "%s %s\n", lines[i].At.Format("15:04:05.000"), lines[i].Text)
			i++
			continue
		}
		j := i
		for j+1 < len(lines) && hbRe.MatchString(lines[j+1].Text) {
			j++
		}
		if j == i {
			fmt.Fprintf(&b, "%s %s\n", lines[i].At.Format("15:04:05.000"), lines[i].Text)
		} else {
			fmt.Fprintf(&b, "%s %s .. %s %s (%d heartbeat lines)\n", lines[i].At.Format("15:04:05.000"), lines[i].Text,
				lines[j].At.Format("15:04:05.000"), lines[j].Text, j-i+1)
		}
		i = j + 1
	}
	return b.String()
}
