#!/usr/bin/python3
"""Generate golden Mobile IPv6 packets with scapy for mipv6/golden_test.go.

tests/interop/golden_test.go runs this script and expects the committed file.

Every packet below is built by scapy's own Mobile IPv6 classes
(scapy.layers.inet6), which share no code with package mipv6, so the bytes
are an independent reference for RFC 6275. The output records, for each
packet, the values scapy was given (with scapy's field names) and the bytes
scapy produced (lengths, padding and checksums are left to scapy).

scapy 2.5 has no classes for the options of Dual-Stack Mobile IPv6 (RFC
5555): IPv4HomeAddressOption and IPv4AddressAckOption below are written here
from the layouts of RFC 5555 sections 3.1.1 and 3.2.1, not taken from
scapy. scapy still places them (their 4n alignment), pads and checksums the
packets that carry them, so those vectors check the RFC's layout as read
here, and scapy's framing, against package mipv6.

Regenerate with `go generate ./mipv6/` or:

    /usr/bin/python3 mipv6/testdata/gen_golden.py mipv6/testdata/golden.json

Without an argument the JSON goes to standard output.
"""

import json
import sys

from scapy.all import raw
from scapy.fields import BitField, ByteField, IPField
from scapy.layers.inet6 import (
    HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, MIP6MH_BA, MIP6MH_BE,
    MIP6MH_BRR, MIP6MH_BU, MIP6OptAltCoA, MIP6OptBindingAuthData,
    MIP6OptBRAdvice, MIP6OptNonceIndices, MIP6OptUnknown, _MIP6OptAlign)


class IPv4HomeAddressOption(_MIP6OptAlign):
    """IPv4 Home Address option, RFC 5555 section 3.1.1 (type 29)."""
    name = "MIPv6 Option - IPv4 Home Address (RFC 5555)"
    fields_desc = [ByteField("otype", 29),
                   ByteField("olen", 6),
                   BitField("prefixlen", 32, 6),
                   BitField("p_flag", 0, 1),
                   BitField("reserved", 0, 9),
                   IPField("ipv4hoa", "0.0.0.0")]
    x = 4
    y = 0  # alignment requirement: 4n


class IPv4AddressAckOption(_MIP6OptAlign):
    """IPv4 Address Acknowledgement option, RFC 5555 section 3.2.1 (type 30)."""
    name = "MIPv6 Option - IPv4 Address Acknowledgement (RFC 5555)"
    fields_desc = [ByteField("otype", 30),
                   ByteField("olen", 6),
                   ByteField("ipv4status", 0),
                   BitField("prefixlen", 0, 6),
                   BitField("reserved", 0, 2),
                   IPField("ipv4hoa", "0.0.0.0")]
    x = 4
    y = 0  # alignment requirement: 4n


# Lab addresses (DESIGN.md) plus a correspondent node for the
# return-routability options.
HA = "2001:db8:2000::1"
HOA = "2001:db8:2000::10"
COA = "2001:db8:3000::3"
ALT_COA = "2001:db8:3000::33"
CN = "2001:db8:4000::4"
HOA4 = "192.0.2.10"

MH_CLASSES = {"BU": MIP6MH_BU, "BA": MIP6MH_BA, "BE": MIP6MH_BE, "BRR": MIP6MH_BRR}

OPT_CLASSES = {
    "MIP6OptBRAdvice": MIP6OptBRAdvice,
    "MIP6OptAltCoA": MIP6OptAltCoA,
    "MIP6OptNonceIndices": MIP6OptNonceIndices,
    "MIP6OptBindingAuthData": MIP6OptBindingAuthData,
    "MIP6OptUnknown": MIP6OptUnknown,
    "IPv4HomeAddressOption": IPv4HomeAddressOption,
    "IPv4AddressAckOption": IPv4AddressAckOption,
}

# Scapy's defaults are not RFC 6275's everywhere: MIP6MH_BU defaults to
# flags "KHA" and MIP6MH_BA to "K", and MIP6OptNonceIndices and
# MIP6OptBindingAuthData default to olen 16 (the RFC says 4 and, for a
# 96-bit authenticator, 12). So every case spells out flags and olen.

def bu(name, description, src, hoa, seq, flags, mhtime, dst=HA, options=(), encode=True):
    return dict(name=name, description=description, encode=encode, src=src, dst=dst, hao=hoa,
                mh=dict(type="BU", seq=seq, flags=flags, mhtime=mhtime), options=list(options))


def ba(name, description, status, seq, mhtime, flags="", options=(), encode=True):
    return dict(name=name, description=description, encode=encode, src=HA, dst=COA, rh2=HOA,
                mh=dict(type="BA", status=status, flags=flags, seq=seq, mhtime=mhtime),
                options=list(options))


CASES = [
    bu("bu_registration", "home registration from the care-of address, Home Address option",
       COA, HOA, seq=0x1234, flags="AH", mhtime=150),
    bu("bu_refresh", "refresh of the registration: next sequence number, same binding",
       COA, HOA, seq=0x1235, flags="AH", mhtime=150),
    bu("bu_deregistration_from_home", "de-registration sent from the home link: lifetime 0, source and Home Address option both the home address (RFC 6275 11.5.4)",
       HOA, HOA, seq=0x1236, flags="AH", mhtime=0),
    bu("bu_flags_sequence_wrap", "every flag kgswitch knows, sequence and lifetime at their maximum",
       COA, HOA, seq=0xffff, flags="AHLKMR", mhtime=0xffff),
    bu("bu_alternate_coa", "home registration with an Alternate Care-of Address option (8n+6)",
       COA, HOA, seq=7, flags="AH", mhtime=150,
       options=[dict(cls="MIP6OptAltCoA", olen=16, acoa=ALT_COA)]),
    bu("bu_nonce_indices", "correspondent registration with Nonce Indices (2n)",
       COA, HOA, seq=8, flags="A", mhtime=60, dst=CN,
       options=[dict(cls="MIP6OptNonceIndices", olen=4, hni=7, coni=0xfffe)]),
    bu("bu_nonce_indices_alternate_coa", "Nonce Indices followed by an Alternate Care-of Address",
       COA, HOA, seq=9, flags="A", mhtime=60, dst=CN,
       options=[dict(cls="MIP6OptNonceIndices", olen=4, hni=1, coni=2),
                dict(cls="MIP6OptAltCoA", olen=16, acoa=ALT_COA)]),
    bu("bu_binding_auth_data", "correspondent registration with Nonce Indices and a 96-bit Binding Authorization Data option (8n+2); decoded only",
       COA, HOA, seq=10, flags="A", mhtime=60, dst=CN, encode=False,
       options=[dict(cls="MIP6OptNonceIndices", olen=4, hni=3, coni=4),
                dict(cls="MIP6OptBindingAuthData", olen=12, authenticator=0x0102030405060708090a0b0c)]),
    bu("bu_unknown_option", "an unknown mobility option (type 200) before an Alternate Care-of Address: skipped (RFC 6275 6.2.1); decoded only",
       COA, HOA, seq=11, flags="AH", mhtime=150, encode=False,
       options=[dict(cls="MIP6OptUnknown", otype=200, olen=3, odata="aabbcc"),
                dict(cls="MIP6OptAltCoA", olen=16, acoa=ALT_COA)]),
    bu("bu_ipv4_home_address", "dual-stack home registration: IPv4 Home Address option (RFC 5555 3.1.1, 4n), a single address",
       COA, HOA, seq=0x1237, flags="AH", mhtime=150,
       options=[dict(cls="IPv4HomeAddressOption", olen=6, prefixlen=32, p_flag=0, ipv4hoa=HOA4)]),
    bu("bu_ipv4_dynamic_request", "IPv4 Home Address option asking the Home Agent to assign an address (0.0.0.0)",
       COA, HOA, seq=0x1238, flags="AH", mhtime=150,
       options=[dict(cls="IPv4HomeAddressOption", olen=6, prefixlen=32, p_flag=0, ipv4hoa="0.0.0.0")]),
    bu("bu_ipv4_alternate_coa", "IPv4 Home Address option followed by an Alternate Care-of Address (8n+6)",
       COA, HOA, seq=0x1239, flags="AH", mhtime=150,
       options=[dict(cls="IPv4HomeAddressOption", olen=6, prefixlen=32, p_flag=0, ipv4hoa=HOA4),
                dict(cls="MIP6OptAltCoA", olen=16, acoa=ALT_COA)]),
    bu("bu_ipv4_prefix_request_unaligned", "an unknown option (type 200) moves a prefix-requesting IPv4 Home Address option (P set, /24) off 4n: scapy pads it back; decoded only",
       COA, HOA, seq=0x123a, flags="AH", mhtime=150, encode=False,
       options=[dict(cls="MIP6OptUnknown", otype=200, olen=3, odata="aabbcc"),
                dict(cls="IPv4HomeAddressOption", olen=6, prefixlen=24, p_flag=1, ipv4hoa="0.0.0.0")]),
    ba("ba_status_0", "accepted", status=0, seq=0x1234, mhtime=150),
    ba("ba_status_1", "accepted but prefix discovery necessary", status=1, seq=0x1234, mhtime=150),
    ba("ba_status_132", "not home subnet", status=132, seq=0x1234, mhtime=0),
    ba("ba_status_135", "sequence number out of window: the sequence number is the last one accepted", status=135, seq=0x0042, mhtime=0, flags="K"),
    ba("ba_refresh_advice", "accepted with a Binding Refresh Advice option (2n)", status=0, seq=0x1234, mhtime=150,
       options=[dict(cls="MIP6OptBRAdvice", olen=2, rinter=75)]),
    ba("ba_unknown_option", "an unknown mobility option (type 200) before a Binding Refresh Advice: skipped; decoded only",
       status=0, seq=0x1234, mhtime=150, encode=False,
       options=[dict(cls="MIP6OptUnknown", otype=200, olen=3, odata="aabbcc"),
                dict(cls="MIP6OptBRAdvice", olen=2, rinter=75)]),
    ba("ba_ipv4_accepted", "IPv4 Address Acknowledgement (RFC 5555 3.2.1, 4n): success, the address bound", status=0, seq=0x1237, mhtime=150,
       options=[dict(cls="IPv4AddressAckOption", olen=6, ipv4status=0, prefixlen=32, ipv4hoa=HOA4)]),
    ba("ba_ipv4_prohibited", "IPv6 accepted, IPv4 administratively prohibited (129), prefix length zero on failure", status=0, seq=0x1237, mhtime=150,
       options=[dict(cls="IPv4AddressAckOption", olen=6, ipv4status=129, prefixlen=0, ipv4hoa=HOA4)]),
    ba("ba_ipv4_refresh_advice", "IPv4 Address Acknowledgement followed by a Binding Refresh Advice (2n)", status=0, seq=0x1237, mhtime=150,
       options=[dict(cls="IPv4AddressAckOption", olen=6, ipv4status=0, prefixlen=32, ipv4hoa=HOA4),
                dict(cls="MIP6OptBRAdvice", olen=2, rinter=75)]),
    ba("ba_ipv4_after_unknown_option", "an unknown option (type 200) before an IPv4 Address Acknowledgement (133): scapy pads it to 4n; decoded only",
       status=0, seq=0x1237, mhtime=150, encode=False,
       options=[dict(cls="MIP6OptUnknown", otype=200, olen=3, odata="aabbcc"),
                dict(cls="IPv4AddressAckOption", olen=6, ipv4status=133, prefixlen=0, ipv4hoa="0.0.0.0")]),
    dict(name="be_status_1", description="unknown binding for Home Address destination option", encode=True,
         src=HA, dst=COA, mh=dict(type="BE", status=1, ha=HOA), options=[]),
    dict(name="be_status_2", description="unrecognized MH Type value", encode=True,
         src=HA, dst=COA, mh=dict(type="BE", status=2, ha="::"), options=[]),
    dict(name="brr", description="binding refresh request from the Home Agent to the home address", encode=True,
         src=HA, dst=HOA, mh=dict(type="BRR"), options=[]),
]


def option(o):
    args = {k: v for k, v in o.items() if k != "cls"}
    if "odata" in args:
        args["odata"] = bytes.fromhex(args["odata"])
    return OPT_CLASSES[o["cls"]](**args)


def build(c):
    p = IPv6(src=c["src"], dst=c["dst"])
    if "rh2" in c:
        p = p / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[c["rh2"]])
    if "hao" in c:
        p = p / IPv6ExtHdrDestOpt(options=[HAO(hoa=c["hao"])])
    mh = {k: v for k, v in c["mh"].items() if k != "type"}
    opts = [option(o) for o in c["options"]]
    if c["mh"]["type"] != "BE" or opts:
        mh["options"] = opts
    return raw(p / MH_CLASSES[c["mh"]["type"]](**mh))


def main():
    out = []
    for c in CASES:
        c = dict(c)
        c["hex"] = build(c).hex()
        out.append(c)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
