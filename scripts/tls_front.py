#!/usr/bin/env python3
"""A TLS front for the tests: terminates TLS on 127.0.0.1 with a certificate from a throwaway CA and forwards
the plain bytes to an upstream HTTP server (the local emulator).

    tls_front.py UPSTREAM_URL DIR [--chacha20-only]

With --chacha20-only it speaks TLS 1.2 with the ChaCha20-Poly1305 suites alone (a server lock-exec cannot agree
with: it offers AES-GCM only). Writes DIR/ca.pem (the CA's certificate, the bundle a client must trust), prints the listening port on one line
and serves until stdin closes (the test holds the pipe; the front never outlives it). Needs the `cryptography`
package, which moto brings into the test virtualenv.
"""
import datetime
import ipaddress
import os
import socket
import ssl
import sys
import threading
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(subject, issuer, key, signing_key, ca, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def pump(source, destination):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            destination.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, destination):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, context, upstream):
    while True:
        client, _ = listener.accept()
        try:
            tls = context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()
            continue
        try:
            backend = socket.create_connection(upstream)
        except OSError:
            tls.close()
            continue
        threading.Thread(target=pump, args=(tls, backend), daemon=True).start()
        threading.Thread(target=pump, args=(backend, tls), daemon=True).start()


def main():
    upstream_url, directory = sys.argv[1], sys.argv[2]
    chacha20_only = sys.argv[3:] == ["--chacha20-only"]
    parsed = urllib.parse.urlsplit(upstream_url)
    upstream = (parsed.hostname, parsed.port or 80)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("lock-exec test CA", "lock-exec test CA", ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_cert = certificate("localhost", "lock-exec test CA", server_key, ca_key, ca=False, sans=sans)

    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = os.path.join(directory, "server.pem")
    with open(chain, "wb") as f:
        f.write(server_cert.public_bytes(serialization.Encoding.PEM))
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    key = os.path.join(directory, "server.key")
    with open(key, "wb") as f:
        f.write(
            server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    if chacha20_only:
        # Python cannot narrow TLS 1.3's suites: TLS 1.2 it is.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE+CHACHA20")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=serve, args=(listener, context, upstream), daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
