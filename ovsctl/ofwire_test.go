package ovsctl

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseOFHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    ofHeader
		wantErr bool
	}{
		{"hello", []byte{5, 0, 0, 8, 0, 0, 0, 1}, ofHeader{Version: 5, Type: ofTypeHello, Length: 8, XID: 1}, false},
		{"echo with payload", []byte{4, 2, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4}, ofHeader{Version: 4, Type: ofTypeEchoRequest, Length: 12, XID: 0xdeadbeef}, false},
		{"short", []byte{5, 0, 0, 8, 0, 0, 0}, ofHeader{}, true},
		{"length below header", []byte{5, 0, 0, 7, 0, 0, 0, 1}, ofHeader{}, true},
		{"empty", nil, ofHeader{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOFHeader(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got parseOFHeader() error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errShortHeader) {
				t.Errorf("got error %v, want errShortHeader", err)
			}
			if got != tt.want {
				t.Errorf("got parseOFHeader() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHelloMessage(t *testing.T) {
	// OpenFlow 1.4.0 section 7.5.1: header, then one version bitmap
	// element (type 1, length 8) with bits 1 to 5 set.
	want := []byte{0x05, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x3e}
	if got := helloMessage(42); !bytes.Equal(got, want) {
		t.Errorf("got helloMessage(42) = % x, want % x", got, want)
	}
}

func TestEchoReply(t *testing.T) {
	req := []byte{0x01, 0x02, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x07, 'a', 'b', 'c'}
	got, err := echoReply(req)
	if err != nil {
		t.Fatalf("echoReply() = %v", err)
	}
	want := []byte{0x01, 0x03, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x07, 'a', 'b', 'c'}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("echoReply() mismatch (-want +got):\n%s", diff)
	}
	if req[1] != ofTypeEchoRequest {
		t.Errorf("echoReply modified its argument")
	}
	for name, bad := range map[string][]byte{
		"hello":      {0x05, 0x00, 0x00, 0x08, 0, 0, 0, 1},
		"truncated":  {0x05, 0x02, 0x00, 0x0c, 0, 0, 0, 1},
		"too long":   {0x05, 0x02, 0x00, 0x08, 0, 0, 0, 1, 9},
		"no header":  {0x05, 0x02},
		"bad length": {0x05, 0x02, 0x00, 0x00, 0, 0, 0, 1},
	} {
		if _, err := echoReply(bad); err == nil {
			t.Errorf("got echoReply(%s) error nil, want error", name)
		}
	}
}

// FuzzOFMessage decodes arbitrary bytes as an OpenFlow message: parsing
// must not panic, a parsed header must build back to the same bytes, and
// an echo reply must mirror the request.
func FuzzOFMessage(f *testing.F) {
	f.Add([]byte{5, 0, 0, 8, 0, 0, 0, 1})
	f.Add([]byte{1, 2, 0, 10, 0, 0, 0, 9, 1, 2})
	f.Add(helloMessage(7))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseOFHeader(b)
		if err != nil {
			return
		}
		if got := appendOFHeader(nil, h); !bytes.Equal(got, b[:ofHeaderLen]) {
			t.Fatalf("got header bytes % x, want % x", got, b[:ofHeaderLen])
		}
		again, err := parseOFHeader(appendOFHeader(nil, h))
		if err != nil || again != h {
			t.Fatalf("round trip: got %+v, %v, want %+v", again, err, h)
		}
		rep, err := echoReply(b)
		if err != nil {
			return
		}
		rh, err := parseOFHeader(rep)
		if err != nil || rh.Type != ofTypeEchoReply || rh.XID != h.XID || rh.Version != h.Version ||
			!bytes.Equal(rep[ofHeaderLen:], b[ofHeaderLen:]) {
			t.Errorf("got echo reply % x (%v) to % x, want same version, xid and payload", rep, err, b)
		}
	})
}
