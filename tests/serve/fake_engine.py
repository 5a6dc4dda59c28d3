"""A small but real engine process for supervisor tests: an HTTP server with /health and /v1/models whose
failure modes are chosen on the command line (crash, print an error and exit, fork a child that leaves
the process group, ignore SIGTERM). Run as `python fake_engine.py PORT NAME [options]`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    port, name, *opts = sys.argv[1:]
    if "--fail" in opts:
        print(opts[opts.index("--fail") + 1], flush=True)
        sys.exit(1)
    if "--ignore-term" in opts:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--escaping-child" in opts:
        # Like vLLM's engine core: a child that moves to its own session, outside our process group.
        child = subprocess.Popen(
            [sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"], start_new_session=False
        )
        print(f"child {child.pid}", flush=True)
    delay = float(opts[opts.index("--load") + 1]) if "--load" in opts else 0.0
    time.sleep(delay)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                body = b'{"status":"ok"}'
            elif self.path == "/v1/models":
                body = json.dumps({"data": [{"id": name}]}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            print("request", fmt % args, flush=True)

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    print(f"listening on {port} pid {os.getpid()}", flush=True)
    if "--crash-after" in opts:
        after = float(opts[opts.index("--crash-after") + 1])
        last_words = opts[opts.index("--crash-message") + 1] if "--crash-message" in opts else "crashing"

        def crash() -> None:
            print(last_words, flush=True)
            os._exit(3)

        threading.Timer(after, crash).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
