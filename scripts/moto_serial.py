"""Serve moto's DynamoDB/STS/IAM emulator on 127.0.0.1 with requests applied one at a time.

Stock moto_server handles requests in parallel threads, and its conditional writes are then not atomic
(two concurrent conditional UpdateItems on one key can both succeed). DynamoDB's are atomic, so this
launcher wraps moto's WSGI app in a lock. Connections are still accepted concurrently (HTTP/1.1 keep-alive).

Usage: python moto_serial.py --port-file FILE [--port N]
Writes the chosen port to FILE once the socket is listening.
"""

import argparse
import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server


class KeepAliveHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *args, **kwargs):
        if os.environ.get("MOTO_SERIAL_LOG"):
            super().log_request(*args, **kwargs)


def serialized(app):
    lock = threading.Lock()

    def wsgi(environ, start_response):
        with lock:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    return wsgi


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    app = serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=KeepAliveHandler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_port))
    os.replace(tmp, args.port_file)
    print(f"moto (serialized) listening on http://127.0.0.1:{server.server_port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
