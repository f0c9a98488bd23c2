#!/usr/bin/env python3
"""ESP packets built by a peer we did not write, for tests/vectors.rs.

Every packet is assembled here field by field as RFC 4303 section 2 draws it, with the
primitives of python3-cryptography (Debian: python3-cryptography), not with our code:

  AES-GCM (RFC 4106): nonce = 4-byte salt (last 4 bytes of the key material) || 8-byte IV;
      AAD = SPI || Sequence Number, or SPI || ESN high || ESN low with ESN (section 5);
      ICV = the 16-byte tag.
  AES-CBC + HMAC-SHA-256-128 (RFC 3602, RFC 4868): key material = AES key || 32-byte HMAC key;
      ICV = HMAC-SHA-256(SPI .. Next Header || ESN high if ESN)[:16] (RFC 4303 section 2.2.1).
  Padding 1, 2, 3... to 4 bytes (GCM) or 16 (CBC), RFC 4303 section 2.4.

The IVs follow m6t-ipsec's documented rule so the Rust test can also check that our
encapsulation gives the same bytes: GCM IV = (seed + seq) mod 2^64, CBC IV = AES-ECB_K(seed ||
seq). Decapsulation does not depend on that rule.

Run from the repository root:  python3 crates/ipsec/tests/vectors.py > crates/ipsec/tests/vectors.txt
Output: one case per line, fields separated by spaces (see HEADER).
"""

import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# name: (kind, AES key length)
ALGORITHMS = {
    "aes128gcm16": ("gcm", 16),
    "aes256gcm16": ("gcm", 32),
    "aes128-sha256": ("cbc", 16),
    "aes256-sha256": ("cbc", 32),
}

HEADER = "# name algorithm mode esn spi seq iv_seed keymat next_header plaintext packet expect"


def keymat(name, n):
    kind, key_len = ALGORITHMS[name]
    total = key_len + (4 if kind == "gcm" else 32)
    return bytes((i * 7 + n * 13 + 1) & 0xFF for i in range(total))


def iv_for(name, km, seed, seq):
    kind, key_len = ALGORITHMS[name]
    if kind == "gcm":
        return ((seed + seq) % 2**64).to_bytes(8, "big")
    ecb = Cipher(algorithms.AES(km[:key_len]), modes.ECB()).encryptor()
    return ecb.update(seed.to_bytes(8, "big") + seq.to_bytes(8, "big")) + ecb.finalize()


def esp(name, km, spi, seq, esn, seed, next_header, payload, bad_pad=False):
    kind, key_len = ALGORITHMS[name]
    header = struct.pack(">II", spi, seq & 0xFFFFFFFF)
    high = struct.pack(">I", seq >> 32) if esn else b""
    block = 4 if kind == "gcm" else 16
    pad = (block - (len(payload) + 2) % block) % block
    padding = bytes(range(1, pad + 1))
    if bad_pad:
        assert pad > 0
        padding = bytes(pad)  # zeros instead of 1, 2, 3...
    plaintext = payload + padding + bytes([pad, next_header])
    iv = iv_for(name, km, seed, seq)
    if kind == "gcm":
        key, salt = km[:-4], km[-4:]
        aad = header[:4] + high + header[4:]
        sealed = AESGCM(key).encrypt(salt + iv, plaintext, aad)  # ciphertext || tag
        return header + iv + sealed
    enc = Cipher(algorithms.AES(km[:key_len]), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    mac = hmac.HMAC(km[key_len:], hashes.SHA256())
    mac.update(header + iv + ciphertext + high)
    return header + iv + ciphertext + mac.finalize()[:16]


def checksum(data):
    s = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv6_packet(n):
    """An IPv6/UDP-like packet: 40-byte header, next header 17, n payload bytes."""
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("20010db8000000010000000000000002")
    return struct.pack(">IHBB", 6 << 28, n, 17, 64) + src + dst + bytes(range(n))


def ipv4_packet(n):
    """An IPv4 packet: 20-byte header with a valid checksum, protocol 17, n payload bytes."""
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, 64, 17, 0,
                    bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7]))
    h = h[:10] + struct.pack(">H", checksum(h)) + h[12:]
    return h + bytes((i * 3) & 0xFF for i in range(n))


def cases():
    n = 0
    for name in ALGORITHMS:
        for esn in (False, True):
            seqs = [1, 2, 0xFFFFFFFF] if not esn else [1, (1 << 32) + 5, (7 << 32) | 0xFFFFFFFE]
            # Transport mode: a Mobility Header (135) of lengths around every padding case.
            for length in (0, 1, 2, 3, 4, 13, 14, 15, 16, 17, 31, 32, 100):
                n += 1
                seq = seqs[n % len(seqs)]
                payload = bytes((i * 11 + length) & 0xFF for i in range(length))
                yield (n, name, "transport", esn, 0x100 + n, seq, n * 0x0101010101, 135, payload, "ok")
            # Tunnel mode: an inner IPv6 (41) and an inner IPv4 (4) packet.
            for nh, inner in ((41, ipv6_packet(60)), (4, ipv4_packet(33))):
                n += 1
                seq = seqs[n % len(seqs)]
                yield (n, name, "tunnel", esn, 0x100 + n, seq, 0xFEDCBA9876543210, nh, inner, "ok")
            # A packet whose ICV is right but whose padding is not 1, 2, 3...
            n += 1
            yield (n, name, "transport", esn, 0x100 + n, seqs[1], 5, 17, b"bad pad", "bad_pad")


def main():
    print(HEADER)
    for (n, name, mode, esn, spi, seq, seed, nh, payload, expect) in cases():
        km = keymat(name, n)
        packet = esp(name, km, spi, seq, esn, seed, nh, payload, bad_pad=(expect == "bad_pad"))
        fields = [
            "case%d" % n, name, mode, "esn" if esn else "noesn", "%08x" % spi, "%x" % seq,
            "%x" % seed, km.hex(), str(nh), payload.hex() or "-", packet.hex(), expect,
        ]
        print(" ".join(fields))


if __name__ == "__main__":
    main()
