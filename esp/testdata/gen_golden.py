#!/usr/bin/python3
"""Generate golden ESP-protected Mobile IPv6 packets with scapy for esp/golden_test.go.

tests/interop/esp_test.go runs this script and expects the committed file.

Every packet below is built by scapy's Mobile IPv6 classes
(scapy.layers.inet6) and protected by scapy's SecurityAssociation
(scapy.layers.ipsec, which encrypts with python3-cryptography) in transport
mode; none of it shares code with package esp or mipv6, so the bytes are an
independent reference for RFC 4303, RFC 3602, RFC 4106, RFC 2404 and
RFC 4868 as RFC 3776 applies them to Binding Updates and Acknowledgements.
scapy puts ESP where Linux does: after the Destination Options header of a
Binding Update and after the type 2 routing header of an Acknowledgement.

For each algorithm the output records the keys, SPIs, ESP sequence numbers
and IVs scapy was given, the Mobility Header fields, and the bytes scapy
produced. Keys and IVs are fixed so that the file is reproducible; they
protect nothing.

Regenerate with `go generate ./esp/` or:

    /usr/bin/python3 esp/testdata/gen_golden.py esp/testdata/golden.json

Without an argument the JSON goes to standard output.
"""

import json
import struct
import sys

from scapy.all import raw
from scapy.layers.inet6 import (
    HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, MIP6MH_BA, MIP6MH_BU,
    MIP6OptBRAdvice)
from scapy.layers.ipsec import ESP, SecurityAssociation

# Lab addresses (DESIGN.md).
HA = "2001:db8:2000::1"
HOA = "2001:db8:2000::10"
COA = "2001:db8:3000::3"


def octets(first, n):
    """n octets counting up from first: a key or IV anyone can recompute."""
    return bytes((first + i) % 256 for i in range(n))


# name: the Go Algorithm; crypt/auth: scapy's algorithm names; sizes in
# octets of the encryption key material (with GCM's 4-octet salt), the
# integrity key and the IV.
ALGORITHMS = [
    dict(name="AESCBCHMACSHA256", crypt="AES-CBC", auth="SHA2-256-128", enc_key=16, auth_key=32, iv=16),
    dict(name="AESGCM16", crypt="AES-GCM", auth=None, enc_key=20, auth_key=0, iv=8),
    dict(name="NullHMACSHA256", crypt="NULL", auth="SHA2-256-128", enc_key=0, auth_key=32, iv=0),
    dict(name="AESCBCHMACSHA1", crypt="AES-CBC", auth="HMAC-SHA1-96", enc_key=16, auth_key=20, iv=16),
]


def sa(alg, spi, enc_key, auth_key):
    return SecurityAssociation(ESP, spi=spi, crypt_algo=alg["crypt"], crypt_key=enc_key or None,
                               auth_algo=alg["auth"], auth_key=auth_key or None)


def open_esp(s, wire):
    """Check and decrypt wire with SA s and return the clear packet.

    SecurityAssociation.decrypt cannot be used: in transport mode it parses
    the decrypted payload as what the IPv6 header's Next Header names, the
    Destination Options or routing header here (scapy 2.5), so this does
    its steps with the layer it got wrong done by hand.
    """
    p = IPv6(wire)
    e = p[ESP]
    s.check_spi(e)
    s.auth_algo.verify(e, s.auth_key)
    plain = s.crypt_algo.decrypt(s, e, s.crypt_key,
                                 s.crypt_icv_size or s.crypt_algo.icv_size or s.auth_algo.icv_size)
    u = e.underlayer
    u.nh = plain.nh
    u.remove_payload()
    head = bytearray(raw(p))
    struct.pack_into("!H", head, 4, len(head) - 40 + len(plain.data))
    return bytes(head) + bytes(plain.data)


def cases():
    out = []
    for n, alg in enumerate(ALGORITHMS):
        base = 0x10 * (n + 1)
        # Each direction has its own SA, as on a Home Agent: the Binding
        # Update's from the home address to the Home Agent, the
        # Acknowledgement's back.
        bu_sa = dict(spi=0x1000 + n, enc_key=octets(base, alg["enc_key"]), auth_key=octets(base + 0x80, alg["auth_key"]))
        ba_sa = dict(spi=0x2000 + n, enc_key=octets(base + 0x40, alg["enc_key"]), auth_key=octets(base + 0xc0, alg["auth_key"]))
        mhs = [
            ("bu", bu_sa, 1, dict(type="BU", seq=0x1234, flags="AH", mhtime=150, options=[])),
            ("ba", ba_sa, 1, dict(type="BA", status=0, flags="", seq=0x1234, mhtime=150, options=[])),
            ("bu_refresh", bu_sa, 2, dict(type="BU", seq=0x1235, flags="AH", mhtime=150, options=[])),
            ("ba_refresh_advice", ba_sa, 7, dict(type="BA", status=0, flags="", seq=0x1235, mhtime=150,
                                                 options=[dict(cls="MIP6OptBRAdvice", olen=2, rinter=75)])),
            ("ba_status_135", ba_sa, 0xfffffffe, dict(type="BA", status=135, flags="K", seq=0x42, mhtime=0, options=[])),
        ]
        for i, (kind, s, esp_seq, mh) in enumerate(mhs):
            c = dict(name="%s_%s" % (alg["name"], kind), algorithm=alg["name"],
                     scapy_crypt=alg["crypt"], scapy_auth=alg["auth"],
                     spi=s["spi"], enc_key=s["enc_key"].hex(), auth_key=s["auth_key"].hex(),
                     esp_seq=esp_seq, iv=octets(base + 0x20 + i, alg["iv"]).hex(), mh=mh)
            if mh["type"] == "BU":
                c.update(src=COA, dst=HA, hao=HOA, sa_src=HOA, sa_dst=HA)
            else:
                c.update(src=HA, dst=COA, rh2=HOA, sa_src=HA, sa_dst=HOA)
            out.append(c)
    return out


def build(c):
    fields = {k: v for k, v in c["mh"].items() if k not in ("type", "options")}
    opts = [MIP6OptBRAdvice(olen=o["olen"], rinter=o["rinter"]) for o in c["mh"]["options"]]
    if c["mh"]["type"] == "BU":
        p = IPv6(src=c["src"], dst=c["dst"]) / IPv6ExtHdrDestOpt(options=[HAO(hoa=c["hao"])]) / MIP6MH_BU(options=opts, **fields)
    else:
        p = IPv6(src=c["src"], dst=c["dst"]) / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[c["rh2"]]) / MIP6MH_BA(options=opts, **fields)
    alg = next(a for a in ALGORITHMS if a["name"] == c["algorithm"])
    s = sa(alg, c["spi"], bytes.fromhex(c["enc_key"]), bytes.fromhex(c["auth_key"]))
    clear = IPv6(raw(p))
    sealed = s.encrypt(clear, seq_num=c["esp_seq"], iv=bytes.fromhex(c["iv"]))
    wire = raw(sealed)
    # scapy opening its own packet again: the vectors are at least
    # consistent with scapy's decryption and integrity check.
    if open_esp(s, wire) != raw(clear):
        sys.exit("%s: scapy does not get its own packet back" % c["name"])
    c["clear_hex"] = raw(clear).hex()
    return wire


def main():
    out = []
    for c in cases():
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
