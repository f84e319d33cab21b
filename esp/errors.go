package esp

import "errors"

// Sentinel errors, returned wrapped with context. Test for them with
// errors.Is. A receiver drops what fails, silently, as a Home Agent does:
// none of them asks for an answer on the wire (RFC 4303 §3.4).
var (
	// ErrShort means the packet is too short for the ESP header, IV,
	// trailer and ICV its SA's algorithm needs, or for an IPv6 header or
	// extension header it announces.
	ErrShort = errors.New("esp: packet too short")
	// ErrSPI means the packet passed the integrity check with the SA's
	// keys but names another SPI. Finding the SA for an SPI is the
	// caller's job (PacketSPI); a packet opened with the wrong SA fails
	// with ErrAuth.
	ErrSPI = errors.New("esp: SPI is not the SA's")
	// ErrAuth means the integrity check value does not match (RFC 4303
	// §3.4.4): the packet was not sent with this SA's keys, or was changed
	// on the way.
	ErrAuth = errors.New("esp: integrity check failed")
	// ErrBlockSize means the ciphertext is not a whole number of cipher
	// blocks (RFC 3602 §3), so it cannot be CBC-decrypted.
	ErrBlockSize = errors.New("esp: ciphertext not a multiple of the block size")
	// ErrPadding means the decrypted trailer is inconsistent: a Pad Length
	// longer than the payload, or padding other than the default 1, 2,
	// 3, ... of RFC 4303 §2.4, which every sender here uses.
	ErrPadding = errors.New("esp: bad padding")
	// ErrSequence means sequence number 0, which RFC 4303 §3.3.3 never
	// sends (the first packet of an SA is 1).
	ErrSequence = errors.New("esp: sequence number 0")
	// ErrNotESP means the header chain reaches no ESP header after the
	// IPv6 header and its Hop-by-Hop, Routing and Destination Options
	// headers.
	ErrNotESP = errors.New("esp: no ESP header")
	// ErrSelector means the packet's addresses are not the SA's: a
	// Binding Update's home address and Home Agent, or an
	// Acknowledgement's Home Agent and home address (RFC 4301 §5.2, the
	// inbound selector check after decryption).
	ErrSelector = errors.New("esp: addresses do not match the SA")
	// ErrKey means a key of the wrong length for the algorithm.
	ErrKey = errors.New("esp: wrong key length")
)
