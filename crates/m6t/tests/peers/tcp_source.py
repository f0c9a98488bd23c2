#!/usr/bin/python3
"""TCP sender bound to SRC: paced pseudo-random bytes to DST port 5001 for SECS seconds, then
prints the sha256 it sent and the one the receiver answered.

Usage: tcp_source.py SRC DST SECS
"""
import socket, hashlib, sys, time, random
src, dst, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind((src, 0)); s.settimeout(60); s.connect((dst, 5001))
r = random.Random(42); h = hashlib.sha256(); n = 0; t0 = time.time()
while time.time() - t0 < secs:
    b = r.randbytes(16384); s.sendall(b); h.update(b); n += len(b)
    time.sleep(0.01)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = s.recv(100)
    if not b: break
    got += b
print("sent", n, h.hexdigest(), "peer", got.decode(), flush=True)
