"""A tiny HTTP server: port and greeting from its config file, READY=1 once listening."""

import http.server
import os
import socket
import sys


def read_config(path: str) -> dict[str, str]:
    config = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                config[key.strip()] = value.strip()
    return config


def notify(message: bytes) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.send(message)
        except OSError:
            pass  # no supervisor listening: as sd_notify, not an error


def main() -> None:
    config = read_config(sys.argv[1])
    greeting = (config.get("greeting", "hello") + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(greeting)))
            self.end_headers()
            self.wfile.write(greeting)

    server = http.server.HTTPServer(("127.0.0.1", int(config["port"])), Handler)
    print(f"listening on 127.0.0.1:{config['port']}", flush=True)
    notify(f"READY=1\nSTATUS=serving on port {config['port']}".encode())
    server.serve_forever()


if __name__ == "__main__":
    main()
