#!/usr/bin/env python3
"""libsrtp (through pylibsrtp) as the independent SRTP peer of callgate's
interop test (tests/srtp_interop.rs).

Reads one JSON request on stdin:
  {"key": "<base64 key||salt>", "suite": "AES_CM_128_HMAC_SHA1_80" | "..._32",
   "op": "protect" | "unprotect" | "protect_rtcp" | "unprotect_rtcp",
   "packets": ["<hex>", ...]}
and prints {"packets": ["<hex>" | null, ...]} (null: libsrtp refused it).
"""
import base64
import json
import sys

import pylibsrtp

req = json.load(sys.stdin)
profile = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}[req["suite"]]
inbound = req["op"].startswith("unprotect")
policy = pylibsrtp.Policy(
    key=base64.b64decode(req["key"]),
    ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
    srtp_profile=profile,
)
session = pylibsrtp.Session(policy)
op = getattr(session, req["op"])
out = []
for p in req["packets"]:
    try:
        out.append(op(bytes.fromhex(p)).hex())
    except pylibsrtp.Error:
        out.append(None)
print(json.dumps({"packets": out}))
