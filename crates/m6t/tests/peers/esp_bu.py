#!/usr/bin/python3
"""A mobile node written with scapy, not with m6t: sends one Binding Update protected by ESP
in transport mode (RFC 3776 section 3.1, RFC 4877 section 6.1) inside UDP to port 4191 (RFC
5555 section 4.1), with the IPv4 care-of address option, and decrypts the home agent's
Binding Acknowledgement with the second SA. Prints the BA as JSON; exits non-zero when no
BA arrives or it does not decrypt.

Usage: esp_bu.py HOA HA6 HA4 COA4 SPI_OUT KEYFILE_OUT SPI_IN KEYFILE_IN SEQ
Keys are aes128-sha256: 16 bytes of AES key then 32 bytes of HMAC-SHA-256 key, in hex.
"""
import json
import logging
import socket
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import IPv6, MIP6MH_BU, MIP6MH_BA, MIP6OptUnknown  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402


def sa(spi, keyfile):
    key = bytes.fromhex("".join(open(keyfile).read().split()))
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=key[:16],
                               auth_algo="SHA2-256-128", auth_key=key[16:48])


def main():
    hoa, ha6, ha4, coa4 = sys.argv[1:5]
    out = sa(int(sys.argv[5], 0), sys.argv[6])
    inb = sa(int(sys.argv[7], 0), sys.argv[8])
    seq = int(sys.argv[9])
    # IPv4 Care-of Address option (RFC 5555 section 3.1.5: type 32, length 6, reserved,
    # the address), so the home agent can compare it with the outer source.
    coa_opt = MIP6OptUnknown(otype=32, odata=b"\0\0" + socket.inet_aton(coa4))
    bu = IPv6(src=hoa, dst=ha6) / MIP6MH_BU(seq=seq, flags="AH", mhtime=25, options=[coa_opt])
    wire = bytes(out.encrypt(bu))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((coa4, 4191))
    s.settimeout(5)
    s.sendto(wire, (ha4, 4191))
    data, peer = s.recvfrom(65535)
    ba = inb.decrypt(IPv6(data))
    m = ba[MIP6MH_BA]
    print(json.dumps({"from": "%s:%d" % peer, "esp_next": IPv6(data).nh, "status": m.status,
                      "seq": m.seq, "lifetime": m.mhtime}))


main()
