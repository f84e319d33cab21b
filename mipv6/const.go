package mipv6

import "strconv"

// IPv6 Next Header values used by Mobile IPv6 (IANA "Assigned Internet
// Protocol Numbers"; RFC 6275 §6.1 for the Mobility Header).
const (
	IPProtoHopByHop = 0
	IPProtoIPv6     = 41
	IPProtoRouting  = 43
	IPProtoFragment = 44
	IPProtoICMPv6   = 58
	IPProtoNone     = 59
	IPProtoDstOpts  = 60
	IPProtoMH       = 135
)

// Mobility Header message types, RFC 6275 §6.1.2-§6.1.9.
const (
	TypeBindingRefreshRequest = 0
	TypeHoTI                  = 1
	TypeCoTI                  = 2
	TypeHoT                   = 3
	TypeCoT                   = 4
	TypeBindingUpdate         = 5
	TypeBindingAck            = 6
	TypeBindingError          = 7
)

// Binding Update flags as they appear in the 16 bits after the Sequence
// Number, RFC 6275 §6.1.7; FlagR (Mobile Router) is from RFC 3963 §4.1.
const (
	FlagA uint16 = 0x8000 // Acknowledge
	FlagH uint16 = 0x4000 // Home Registration
	FlagL uint16 = 0x2000 // Link-Local Address Compatibility
	FlagK uint16 = 0x1000 // Key Management Mobility Capability
	FlagM uint16 = 0x0800 // MAP Registration (RFC 5380)
	FlagR uint16 = 0x0400 // Mobile Router (RFC 3963)
)

// Binding Acknowledgement flags, the octet after the Status field:
// K from RFC 6275 §6.1.8, R (Mobile Router) from RFC 3963 §4.2.
const (
	BAFlagK uint8 = 0x80
	BAFlagR uint8 = 0x40
)

// Binding Acknowledgement status values, RFC 6275 §6.1.8 (0-139) and
// RFC 3963 §4.2 (140-143). Values below 128 mean the Binding Update was
// accepted.
const (
	StatusAccepted                     = 0
	StatusAcceptedPrefixDiscovery      = 1
	StatusUnspecified                  = 128
	StatusProhibited                   = 129
	StatusInsufficientResources        = 130
	StatusHomeRegistrationNotSupported = 131
	StatusNotHomeSubnet                = 132
	StatusNotHomeAgent                 = 133
	StatusDADFailed                    = 134
	StatusSequenceOutOfWindow          = 135
	StatusExpiredHomeNonce             = 136
	StatusExpiredCareOfNonce           = 137
	StatusExpiredNonces                = 138
	// StatusRegistrationTypeChange is "Registration type change disallowed"
	// (RFC 6275 §6.1.8): the Home Registration flag differs from the
	// existing binding's. Note: UMIP's mip6d answers a BU with the R flag
	// set with 139 and calls it "mobile router operation not permitted"
	// (docs/home-agents.md); the registry gives that meaning to 140
	// (StatusMobileRouterNotPermitted, and UMIP's own headers define
	// IP6_MH_BAS_MR_OP_NOT_PERMITTED as 140). A client that sets R should
	// therefore treat both 139 and 140 as "do not set R".
	StatusRegistrationTypeChange = 139
	// StatusMobileRouterNotPermitted is "Mobile Router Operation not
	// permitted", RFC 3963 §4.2.
	StatusMobileRouterNotPermitted = 140
	// StatusInvalidPrefix is "Invalid Prefix", RFC 3963 §4.2.
	StatusInvalidPrefix = 141
	// StatusNotAuthorizedForPrefix is "Not Authorized for Prefix",
	// RFC 3963 §4.2.
	StatusNotAuthorizedForPrefix = 142
	// StatusForwardingSetupFailed is "Forwarding Setup failed" in RFC 3963
	// §4.2; the IANA registry lists 143 as "Mobile Network Prefix
	// information unavailable".
	StatusForwardingSetupFailed = 143
)

// Binding Error status values, RFC 6275 §6.1.9.
const (
	// BEStatusUnknownBinding means a Home Address destination option
	// arrived without a binding for it.
	BEStatusUnknownBinding = 1
	// BEStatusUnrecognizedMHType means the MH Type was not recognized.
	BEStatusUnrecognizedMHType = 2
)

// StatusString returns a short lower-case description of Binding
// Acknowledgement status s (RFC 6275 §6.1.8, RFC 3963 §4.2), or "status N"
// for values without a registered meaning.
func StatusString(s uint8) string {
	switch s {
	case StatusAccepted:
		return "accepted"
	case StatusAcceptedPrefixDiscovery:
		return "accepted, prefix discovery necessary"
	case StatusUnspecified:
		return "reason unspecified"
	case StatusProhibited:
		return "administratively prohibited"
	case StatusInsufficientResources:
		return "insufficient resources"
	case StatusHomeRegistrationNotSupported:
		return "home registration not supported"
	case StatusNotHomeSubnet:
		return "not home subnet"
	case StatusNotHomeAgent:
		return "not home agent for this mobile node"
	case StatusDADFailed:
		return "DAD failed"
	case StatusSequenceOutOfWindow:
		return "sequence number out of window"
	case StatusExpiredHomeNonce:
		return "expired home nonce index"
	case StatusExpiredCareOfNonce:
		return "expired care-of nonce index"
	case StatusExpiredNonces:
		return "expired nonces"
	case StatusRegistrationTypeChange:
		return "registration type change disallowed"
	case StatusMobileRouterNotPermitted:
		return "mobile router operation not permitted"
	case StatusInvalidPrefix:
		return "invalid prefix"
	case StatusNotAuthorizedForPrefix:
		return "not authorized for prefix"
	case StatusForwardingSetupFailed:
		return "forwarding setup failed"
	}
	return "status " + strconv.Itoa(int(s))
}

// StatusSuccess reports whether Binding Acknowledgement status s means the
// Binding Update was accepted (RFC 6275 §6.1.8: values below 128).
func StatusSuccess(s uint8) bool { return s < 128 }

// IPv4 Address Acknowledgement status values, RFC 5555 §3.2.1 (IANA "DSMIPv6
// IPv4 Home Address Option Status Codes"). Values below 128 mean the IPv4
// home address was bound.
const (
	IPv4StatusSuccess = 0
	// IPv4StatusUnspecified is "Failure, reason unspecified". kgswitch
	// also records it when an Ack omits the acknowledgement (Binding.HandleBA).
	IPv4StatusUnspecified        = 128
	IPv4StatusProhibited         = 129 // Administratively prohibited
	IPv4StatusIncorrectHome      = 130 // Incorrect IPv4 home address
	IPv4StatusInvalidAddress     = 131 // Invalid IPv4 address
	IPv4StatusDynamicUnavailable = 132 // Dynamic IPv4 home address assignment not available
	IPv4StatusPrefixUnauthorized = 133 // Prefix allocation unauthorized
)

// IPv4StatusString returns a short lower-case description of IPv4 Address
// Acknowledgement status s (RFC 5555 §3.2.1), or "status N" for values
// without a registered meaning.
func IPv4StatusString(s uint8) string {
	switch s {
	case IPv4StatusSuccess:
		return "success"
	case IPv4StatusUnspecified:
		return "failure, reason unspecified"
	case IPv4StatusProhibited:
		return "administratively prohibited"
	case IPv4StatusIncorrectHome:
		return "incorrect IPv4 home address"
	case IPv4StatusInvalidAddress:
		return "invalid IPv4 address"
	case IPv4StatusDynamicUnavailable:
		return "dynamic IPv4 home address assignment not available"
	case IPv4StatusPrefixUnauthorized:
		return "prefix allocation unauthorized"
	}
	return "status " + strconv.Itoa(int(s))
}
