// Command tcpcheck proves that a TCP connection survives a VM's move byte for
// byte. "tcpcheck serve" (in the guest) echoes one connection back and reports
// what it received; "tcpcheck send" (on the correspondent) streams a
// deterministic byte sequence at a steady rate, reads the echo, and reports the
// SHA-256 of both directions as one JSON line.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// Report is printed as one JSON line when a side finishes.
type Report struct {
	Role       string  `json:"role"`
	Sent       int64   `json:"sent,omitempty"`
	SentSHA    string  `json:"sent_sha256,omitempty"`
	Received   int64   `json:"received"`
	ReceivedSH string  `json:"received_sha256"`
	Seconds    float64 `json:"seconds"`
	Error      string  `json:"error,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tcpcheck serve -listen [addr]:port | tcpcheck send -to addr:port -bytes N -rate B/s")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "[::]:5001", "address to listen on (serve)")
	to := fs.String("to", "", "address to connect to (send)")
	total := fs.Int64("bytes", 4<<20, "bytes to send (send)")
	rate := fs.Int64("rate", 256<<10, "bytes per second (send)")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after this long")
	fs.Parse(os.Args[2:])
	var r Report
	switch os.Args[1] {
	case "serve":
		r = serve(*listen, *timeout)
	case "send":
		r = send(*to, *total, *rate, *timeout)
	default:
		fmt.Fprintf(os.Stderr, "tcpcheck: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
	json.NewEncoder(os.Stdout).Encode(r)
	if r.Error != "" {
		os.Exit(1)
	}
}

func serve(addr string, timeout time.Duration) Report {
	r := Report{Role: "serve"}
	// "tcp", not "tcp6": on [::] that is one socket for IPv6 and IPv4
	// (IPV6_V6ONLY off), so a guest serves its IPv4 home address too.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	fmt.Fprintln(os.Stderr, "listening")
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	start := time.Now()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(c, h), c)
	r.Received, r.ReceivedSH, r.Seconds = n, hex.EncodeToString(h.Sum(nil)), time.Since(start).Seconds()
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func send(addr string, total, rate int64, timeout time.Duration) Report {
	r := Report{Role: "send"}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	start := time.Now()
	echo := make(chan Report, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, c)
		er := Report{Received: n, ReceivedSH: hex.EncodeToString(h.Sum(nil))}
		if err != nil {
			er.Error = "reading echo: " + err.Error()
		}
		echo <- er
	}()
	rng := rand.NewChaCha8([32]byte{'k', 'g', 's', 'w', 'i', 't', 'c', 'h'})
	h := sha256.New()
	buf := make([]byte, 8192)
	var sent int64
	for sent < total {
		n := int64(len(buf))
		if n > total-sent {
			n = total - sent
		}
		rng.Read(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			r.Error = "writing: " + err.Error()
			break
		}
		h.Write(buf[:n])
		sent += n
		// Pace to rate so the stream spans the move instead of finishing before it.
		if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	r.Sent, r.SentSHA = sent, hex.EncodeToString(h.Sum(nil))
	c.(*net.TCPConn).CloseWrite()
	er := <-echo
	r.Received, r.ReceivedSH, r.Seconds = er.Received, er.ReceivedSH, time.Since(start).Seconds()
	if r.Error == "" {
		r.Error = er.Error
	}
	return r
}
