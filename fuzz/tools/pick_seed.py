#!/usr/bin/env python3
"""Encode a pick case (JSON, the fields of checks::PickCase) in the byte format the
`pick` target's `arbitrary`-derived Input reads, to write seeds by hand:
    fuzz/tools/pick_seed.py fuzz/seed-cases/pick/NAME.json > fuzz/seeds/pick/NAME
Check with `cargo +nightly fuzz fmt pick fuzz/seeds/pick/NAME`. (arbitrary 1.x: u8 one
byte, bool the low bit of a byte, f64 8 bytes little-endian, a Vec an element after
each 0x01 byte and a 0x00 byte at its end.)"""
import json, struct, sys

FIELDS = [("backend", "u8"), ("hash_key", "bytes"), ("cookie", "bytes"), ("host", "bytes"),
          ("location_path", "bytes"), ("user_agent", "bytes"), ("https", "bool"), ("now", "f64"),
          ("headers", "pairs"), ("retries", "u8"), ("reconfigure", "bool"), ("returning", "bool"),
          ("upstream_addr", "bytes"), ("upstream_status", "bytes"), ("connect_time", "bytes"),
          ("response_time", "bytes"), ("observe_picked", "bool"), ("observe_now", "f64")]

def raw(v):
    return v.encode() if isinstance(v, str) else bytes(v)

def vec(items):
    out = b""
    for it in items:
        out += b"\x01" + it
    return out + b"\x00"

def enc(kind, v):
    if kind == "u8": return bytes([v])
    if kind == "bool": return bytes([1 if v else 0])
    if kind == "f64": return struct.pack("<d", float(v))
    if kind == "bytes": return vec(bytes([b]) for b in raw(v))
    if kind == "pairs": return vec(enc("bytes", n) + enc("bytes", x) for n, x in v)

case = json.load(open(sys.argv[1]))
unknown = set(case) - {f for f, _ in FIELDS} - {"comment"}
assert not unknown, unknown
default = {"u8": 0, "bool": False, "f64": 0.0, "bytes": "", "pairs": []}
sys.stdout.buffer.write(b"".join(enc(k, case.get(f, default[k])) for f, k in FIELDS))
