package qemu

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// shell runs commands through the guest's command shell on its virtio
// console hvc0 (init.sh): a non-interactive sh whose input and output are
// the console. Each
// command is framed by two echo commands whose output marks where its output
// starts and ends and carries its exit status. The markers are written
// quoted (@@"B7") so that, should the tty ever echo input, the echo does not
// look like a marker (@@B7).
type shell struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	seq    int
	synced bool
}

func newShell(conn net.Conn) *shell {
	return &shell{conn: conn, r: bufio.NewReader(conn)}
}

// defaultShellTimeout bounds a command whose ctx has no deadline.
const defaultShellTimeout = 30 * time.Second

func (s *shell) run(ctx context.Context, cmd string) (out string, status int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(defaultShellTimeout)
	}
	_ = s.conn.SetDeadline(dl)
	defer s.conn.SetDeadline(time.Time{})
	if !s.synced {
		if err := s.sync(dl); err != nil {
			return "", -1, err
		}
		s.synced = true
	}
	s.seq++
	begin, end := "@@B"+strconv.Itoa(s.seq), "@@E"+strconv.Itoa(s.seq)+" "
	if _, err := fmt.Fprintf(s.conn, "echo @@\"B%d\"\n%s\necho @@\"E%d\" $?\n", s.seq, cmd, s.seq); err != nil {
		return "", -1, fmt.Errorf("guest shell: %w", err)
	}
	var b strings.Builder
	started := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return b.String(), -1, fmt.Errorf("guest shell: %q: %w (output so far %q)", cmd, err, b.String())
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case !started:
			started = strings.HasSuffix(line, begin)
		case strings.Contains(line, end):
			before, rest, _ := strings.Cut(line, end)
			b.WriteString(before) // output without a final newline
			status, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				return b.String(), -1, fmt.Errorf("guest shell: bad end marker %q", line)
			}
			return b.String(), status, nil
		default:
			b.WriteString(line + "\n")
		}
	}
}

// sync waits until the guest's shell answers: before init.sh has started
// it, what is written to the console is lost, and after a migration the
// connection is new. It repeats a harmless echo until one comes back and
// discards whatever else arrives.
func (s *shell) sync(deadline time.Time) error {
	for try := 1; ; try++ {
		marker := "@@S" + strconv.Itoa(try)
		if _, err := fmt.Fprintf(s.conn, "echo @@\"S%d\"\n", try); err != nil {
			return fmt.Errorf("guest shell: %w", err)
		}
		wait := time.Now().Add(500 * time.Millisecond)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = s.conn.SetReadDeadline(wait)
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Now().Before(deadline) {
					break // ask again
				}
				return fmt.Errorf("guest shell does not answer: %w", err)
			}
			if strings.HasSuffix(strings.TrimRight(line, "\r\n"), marker) {
				// Answers to earlier tries may still come; the next markers
				// are distinct, so they are skipped like any stray line.
				_ = s.conn.SetReadDeadline(deadline)
				return nil
			}
		}
	}
}
