#!/usr/bin/python3
"""TCP receiver on port 5001 of ADDRESS: hashes what it gets, answers the sha256, prints it.

Usage: tcp_sink.py ADDRESS
"""
import socket, hashlib, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
c, _ = s.accept()
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
c.sendall(h.hexdigest().encode()); c.close()
print("received", n, h.hexdigest(), flush=True)
