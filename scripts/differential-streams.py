#!/usr/bin/env python3
"""Byte streams for the engine's differential test (crates/engine/tests/
differential.rs): each is what one peer writes before shutting down its
sending side, built with the independent encoder of scripts/golden.py.
Writes crates/engine/tests/differential/NAME.in; the expected replies,
NAME.out, were recorded from the server before the protocol seam (see the
test's docs) and must not change.

    scripts/differential-streams.py            # (re)write the .in files
    scripts/differential-streams.py record ADDR  # record .out from a server
"""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from golden import frame, meta, RESPONSE, ACK_REQUESTED  # noqa: E402

DIR = os.path.join(os.path.dirname(__file__), "..", "crates", "engine", "tests", "differential")

PING, PONG, ECHO, BROADCAST, AUTH, DATA, ERROR = 0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0xFF


def ping(rid):
    return frame(PING, 0, rid, struct.pack(">Q", rid * 1000))


def corrupt_crc(f):
    return f[:-1] + bytes([f[-1] ^ 0x55])


STREAMS = {
    "requests_pipelined": b"".join([
        ping(1), frame(ECHO, 0, 2, b"hello"), frame(0x80, 0, 3, b"abc"),
        frame(0x81, 0, 4, b"Hello, Wire"), frame(ECHO, 0, 5, b""),
        frame(ECHO, 0, 6, bytes(range(256)) * 20), ping(7),
    ]),
    "not_answered_and_unknown": b"".join([
        frame(PONG, RESPONSE, 1, struct.pack(">Q", 1)),
        frame(ERROR, RESPONSE, 2, struct.pack(">H", 5) + b"peer says no"),
        frame(0x99, 0, 3, b"nobody"), frame(ECHO, RESPONSE, 4, b"a response"),
        frame(0x0B, 0, 5, b""), ping(6),
    ]),
    "data_and_auth_without_users": b"".join([
        frame(DATA, 0, 1, b"unacked"), frame(DATA, ACK_REQUESTED, 2, b"acked bytes"),
        frame(AUTH, 0, 3, b"\x05alice" + b"s3cret"), frame(BROADCAST, 0, 4, b"to nobody"),
        ping(5),
    ]),
    "bad_magic": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_version": ping(1) + b"Ww\x02" + ping(2)[3:],
    "bad_crc": ping(1) + corrupt_crc(frame(ECHO, 0, 2, b"x")) + ping(3),
    "too_large": ping(1) + b"Ww" + struct.pack(">BBBBHIQ", 1, ECHO, 0, 0, 0, 2 << 20, 9),
    "malformed_ping_body": frame(PING, 0, 1, b"1234567") + ping(2),
    "bad_flags": frame(ECHO, 0x40, 1, b"x") + ping(2),
    "bad_reserved": b"Ww" + struct.pack(">BBBBHIQ", 1, ECHO, 0, 7, 0, 1, 3) + b"x" + b"\0\0\0\0",
    "bad_metadata": frame(ECHO, 0, 1, b"x", m=b"\x00\x02\x01k\x00\x01v") + ping(2),
    "truncated_at_fin": ping(1) + frame(ECHO, 0, 2, b"never finished")[:25],
    "empty": b"",
}


def write_inputs():
    os.makedirs(DIR, exist_ok=True)
    for name, data in STREAMS.items():
        with open(os.path.join(DIR, name + ".in"), "wb") as f:
            f.write(data)


def record(addr):
    host, port = addr.rsplit(":", 1)
    for name in STREAMS:
        with open(os.path.join(DIR, name + ".in"), "rb") as f:
            data = f.read()
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        s.close()
        with open(os.path.join(DIR, name + ".out"), "wb") as f:
            f.write(out)
        print(name, len(data), "->", len(out))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(sys.argv[2])
    else:
        write_inputs()
