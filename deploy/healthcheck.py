"""Container HEALTHCHECK: healthy when the process answers /healthz on the API port (serve) or the
operations port (consume, mllp). Standard library only: it runs every few seconds."""

import os
import sys
import urllib.request

PORTS = (os.environ.get("CARECOORD_PORT", "8000"), os.environ.get("CARECOORD_OPS_PORT", "9000"))

for port in PORTS:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            sys.exit(0 if response.status == 200 else 1)
    except OSError:
        continue
sys.exit(1)
