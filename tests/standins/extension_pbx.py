#!/usr/bin/env python3
"""A PBX stand-in with a few extensions, for the scanner tests
(tests/trunk_attacks.rs). It answers the way a real PBX does, so that a
scanner talking to it directly (or through a proxy that hides nothing)
learns which extensions exist and can guess a password:

* extensions 201, 202 and 203 exist; every other one does not;
* REGISTER / INVITE / OPTIONS to an existing extension without credentials
  get 401 with a digest challenge; with credentials, 200 when the digest
  (RFC 2617, MD5, qop-less) matches the extension's password, else 403;
  OPTIONS to an existing extension gets 200;
* anything to a missing extension gets 404;
* every answer carries `Server: ExtensionBox-PBX/7.3`.

Usage: extension_pbx.py HOST PORT   (prints "ready" once bound; exits when
its stdin closes, so it never outlives the test that started it).
"""
import hashlib
import re
import socket
import sys
import threading

EXTENSIONS = {"201": "secret42", "202": "w1nter", "203": "n0tlisted"}
REALM = "pbx.example"
NONCE = "5f1e2d3c4b5a6978"
SERVER = "ExtensionBox-PBX/7.3"


def header(head, name, compact=None):
    for line in head:
        k, _, v = line.partition(":")
        if k.strip().lower() in (name.lower(), (compact or "").lower()):
            return v.strip()
    return None


def user_of(value):
    m = re.search(r"sips?:([^@;>]+)@", value or "")
    return m.group(1) if m else None


def digest_ok(auth, method, ext):
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
    password = EXTENSIONS.get(ext)
    if password is None or params.get("username") != ext:
        return False
    ha1 = hashlib.md5(f"{ext}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{params.get('uri', '')}".encode()).hexdigest()
    want = hashlib.md5(f"{ha1}:{params.get('nonce', '')}:{ha2}".encode()).hexdigest()
    return params.get("response") == want


def answer(data):
    text = data.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    first = head[0].split()
    if len(first) < 3 or first[0].startswith("SIP/") or first[0] == "ACK":
        return None
    method, ruri = first[0], first[1]
    ext = user_of(ruri) if method != "REGISTER" else user_of(header(head, "To", "t"))
    if ext is None:
        ext = user_of(header(head, "To", "t"))
    keep = [l for l in head[1:] if l.split(":", 1)[0].strip().lower() in
            ("via", "v", "from", "f", "call-id", "i", "cseq")]
    to = header(head, "To", "t") or ""
    if "tag=" not in to:
        to += ";tag=pbx" + str(abs(hash(text)) % 100000)
    if ext not in EXTENSIONS:
        status = "404 Not Found"
        extra = []
    else:
        auth = header(head, "Authorization") or header(head, "Proxy-Authorization")
        if method == "OPTIONS":
            status, extra = "200 OK", []
        elif auth is None:
            status = "401 Unauthorized"
            extra = [f'WWW-Authenticate: Digest realm="{REALM}", nonce="{NONCE}", algorithm=MD5']
        elif digest_ok(auth, method, ext):
            status, extra = "200 OK", [f"Contact: <sip:{ext}@127.0.0.1>"]
        else:
            status, extra = "403 Forbidden", []
    lines = [f"SIP/2.0 {status}"] + keep + [f"To: {to}", f"Server: {SERVER}",
             "Warning: 399 pbx.internal \"ExtensionBox\""] + extra + ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)

    def serve():
        while True:
            data, peer = sock.recvfrom(65535)
            reply = answer(data)
            if reply:
                sock.sendto(reply, peer)

    threading.Thread(target=serve, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
