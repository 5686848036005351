#!/usr/bin/env bash
# Make a test STI PKI and serve its certificate chain (x5u) over HTTPS on loopback.
#
#   test-calls/sti-pki.sh DIR [PORT]     # default port 8443; Ctrl-C or STI_PKI_SECS (600) to stop
#
# DIR receives:
#   trust/root.pem          STI root (point [stir] trust_dir or --trust here)
#   sti-key.pem, sti.pem    signing key and leaf+intermediate chain (TNAuthList, SPC 1234)
#   web-ca.pem              CA of the HTTPS server (pass as [stir] x5u_ca / --x5u-ca)
# and serves https://127.0.0.1:PORT/sti.pem. For tests only: keys are unprotected.
set -euo pipefail
dir="${1:?usage: sti-pki.sh DIR [PORT]}"
port="${2:-8443}"
mkdir -p "$dir/trust" "$dir/www"
cd "$dir"
ec() { openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1"; chmod 600 "$1"; }
ec root-key.pem; ec inter-key.pem; ec sti-key.pem; ec web-ca-key.pem; ec web-key.pem
openssl req -x509 -new -key root-key.pem -out trust/root.pem -days 3650 -subj "/CN=Test STI root" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -key inter-key.pem -out inter.csr -subj "/CN=Test STI intermediate" 2>/dev/null
# SHAKEN Certificate Policy (ATIS-1000080 §6.4.1; US SHAKEN CP v1.3 OID) on the intermediate and the leaf.
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\ncertificatePolicies=2.16.840.1.114569.1.1.3\n' >inter.ext
openssl x509 -req -in inter.csr -CA trust/root.pem -CAkey root-key.pem -CAcreateserial -out inter.pem -days 3650 -extfile inter.ext 2>/dev/null
openssl req -new -key sti-key.pem -out sti.csr -subj "/CN=SHAKEN 1234" 2>/dev/null
# TNAuthList (RFC 8226 §9): SEQUENCE { [0] IA5String "1234" } — the SPC.
printf 'keyUsage=critical,digitalSignature\ncertificatePolicies=2.16.840.1.114569.1.1.3\n1.3.6.1.5.5.7.1.26=DER:30:08:a0:06:16:04:31:32:33:34\n' >sti.ext
openssl x509 -req -in sti.csr -CA inter.pem -CAkey inter-key.pem -CAcreateserial -out leaf.pem -days 365 -extfile sti.ext 2>/dev/null
cat leaf.pem inter.pem >sti.pem
cp sti.pem www/sti.pem
openssl req -x509 -new -key web-ca-key.pem -out web-ca.pem -days 3650 -subj "/CN=Test web CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -new -key web-key.pem -out web.csr -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >web.ext
openssl x509 -req -in web.csr -CA web-ca.pem -CAkey web-ca-key.pem -CAcreateserial -out web.pem -days 3650 -extfile web.ext 2>/dev/null
rm -f ./*.csr ./*.ext ./*.srl
echo "PKI in $dir; x5u = https://127.0.0.1:$port/sti.pem"
exec timeout "${STI_PKI_SECS:-600}" python3 - "$port" <<'PY'
import http.server, ssl, sys, functools
port = int(sys.argv[1])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="www")
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("web.pem", "web-key.pem")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(f"serving https://127.0.0.1:{port}/sti.pem", flush=True)
httpd.serve_forever()
PY
