#!/usr/bin/env python3
"""Independent encoder for the golden vectors of docs/protocol.md.

Written from the wire contract in docs/protocol.md with struct and zlib only (zlib.crc32 is the same
IEEE 802.3 CRC-32 as crc32fast), so the Rust tests in
crates/frame/tests/golden.rs check the crate against a second implementation
rather than against itself. Prints `name hex` lines.
"""
import struct
import zlib

RESPONSE, ACK_REQUESTED = 1, 2


def meta(entries):
    out = struct.pack(">H", len(entries))
    for k, v in entries:
        out += struct.pack(">B", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def frame(ty, flags, rid, body, m=b""):
    head = b"Ww" + struct.pack(">BBBBHIQ", 1, ty, flags, 0, len(m), len(body), rid)
    payload = head + m + body
    return payload + struct.pack(">I", zlib.crc32(payload) & 0xFFFFFFFF)


SESSION = bytes(range(16))
STATS = [(b"connections", b"1"), (b"messages_in", b"6"), (b"messages_out", b"5"),
         (b"bytes_in", b"230"), (b"bytes_out", b"250"), (b"errors", b"0"),
         (b"uptime_s", b"12"), (b"transport", b"socket")]

VECTORS = [
    ("ping", frame(0x01, 0, 1, struct.pack(">Q", 1_000_000_000))),
    ("pong", frame(0x02, RESPONSE, 1, struct.pack(">Q", 1_000_000_000))),
    ("echo", frame(0x03, 0, 2, b"hello")),
    ("echo_reply", frame(0x04, RESPONSE, 2, b"hello")),
    ("broadcast", frame(0x05, 0, 3, b"hi all")),
    ("broadcast_relayed", frame(0x05, 0, 0, b"hi all", meta([(b"from", SESSION)]))),
    ("auth", frame(0x06, 0, 4, b"\x05alice" + b"s3cret")),
    ("auth_reply", frame(0x07, RESPONSE, 4, b"\x01" + SESSION)),
    ("data", frame(0x08, ACK_REQUESTED, 5, b"payload")),
    ("data_ack", frame(0x09, RESPONSE, 5, struct.pack(">Q", 7))),
    ("stats", frame(0x0A, 0, 6, b"")),
    ("stats_reply", frame(0x0B, RESPONSE, 6, b"", meta(STATS))),
    ("broadcast_ack", frame(0x0C, RESPONSE, 3, struct.pack(">I", 2))),
    ("error", frame(0xFF, RESPONSE, 7, struct.pack(">H", 5) + b"unknown type 0x90")),
    ("app_reverse", frame(0x80, 0, 8, b"abc")),
]

if __name__ == "__main__":
    for name, wire in VECTORS:
        print(name, wire.hex())
