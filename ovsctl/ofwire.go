package ovsctl

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The few OpenFlow messages the switch watcher exchanges. Every OpenFlow
// message starts with the same 8-byte header (OpenFlow 1.4.0 section
// 7.1.1): version, type, length (including the header), xid.
const (
	ofHeaderLen = 8

	ofVersion14 = 0x05

	ofTypeHello       = 0 // OFPT_HELLO, section 7.5.1
	ofTypeError       = 1 // OFPT_ERROR, section 7.5.4
	ofTypeEchoRequest = 2 // OFPT_ECHO_REQUEST, section 7.5.2
	ofTypeEchoReply   = 3 // OFPT_ECHO_REPLY, section 7.5.3

	// ofHelloElemVersionBitmap is OFPHET_VERSIONBITMAP (section 7.5.1.1).
	ofHelloElemVersionBitmap = 1
)

// errShortHeader means fewer than 8 bytes, or a length field smaller than
// the header itself.
var errShortHeader = errors.New("ovsctl: OpenFlow header too short")

// ofHeader is the common OpenFlow header (OpenFlow 1.4.0 section 7.1.1).
type ofHeader struct {
	Version uint8
	Type    uint8
	Length  uint16
	XID     uint32
}

// parseOFHeader decodes the header at the start of b. It checks that
// Length covers the header; whether b holds the whole message is up to the
// caller.
func parseOFHeader(b []byte) (ofHeader, error) {
	if len(b) < ofHeaderLen {
		return ofHeader{}, errShortHeader
	}
	h := ofHeader{
		Version: b[0],
		Type:    b[1],
		Length:  binary.BigEndian.Uint16(b[2:4]),
		XID:     binary.BigEndian.Uint32(b[4:8]),
	}
	if h.Length < ofHeaderLen {
		return ofHeader{}, fmt.Errorf("%w: length %d", errShortHeader, h.Length)
	}
	return h, nil
}

// appendOFHeader appends h in wire format.
func appendOFHeader(b []byte, h ofHeader) []byte {
	b = append(b, h.Version, h.Type)
	b = binary.BigEndian.AppendUint16(b, h.Length)
	return binary.BigEndian.AppendUint32(b, h.XID)
}

// helloMessage builds an OFPT_HELLO offering OpenFlow 1.0 to 1.4 in a
// version bitmap element (OpenFlow 1.4.0 section 7.5.1.1), so that the
// switch negotiates whichever of them the bridge allows; the watcher needs
// nothing version-specific.
func helloMessage(xid uint32) []byte {
	const elemLen = 8 // type, length, one 32-bit bitmap word
	b := appendOFHeader(nil, ofHeader{Version: ofVersion14, Type: ofTypeHello, Length: ofHeaderLen + elemLen, XID: xid})
	b = binary.BigEndian.AppendUint16(b, ofHelloElemVersionBitmap)
	b = binary.BigEndian.AppendUint16(b, elemLen)
	// Bit n stands for wire version n: 0x01 (1.0) to 0x05 (1.4).
	return binary.BigEndian.AppendUint32(b, 1<<1|1<<2|1<<3|1<<4|1<<5)
}

// echoReply builds the OFPT_ECHO_REPLY to the echo request req (a whole
// message): same version, xid and payload (OpenFlow 1.4.0 section 7.5.3).
func echoReply(req []byte) ([]byte, error) {
	h, err := parseOFHeader(req)
	if err != nil {
		return nil, err
	}
	if h.Type != ofTypeEchoRequest || int(h.Length) != len(req) {
		return nil, fmt.Errorf("ovsctl: not a whole echo request: type %d, length %d of %d bytes", h.Type, h.Length, len(req))
	}
	rep := append([]byte(nil), req...)
	rep[1] = ofTypeEchoReply
	return rep, nil
}
