"""A minimal MCP server that will not stop politely: it ignores SIGTERM and keeps running
after stdin closes, so only SIGKILL ends it. For testing the gateway's stop escalation."""

from __future__ import annotations

import json
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)

for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message or "method" not in message:
        continue
    if message["method"] == "initialize":
        result = {"protocolVersion": message["params"]["protocolVersion"],
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "stubborn", "version": "1"}}
    elif message["method"] == "tools/list":
        result = {"tools": []}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
    sys.stdout.flush()

while True:  # stdin is closed; wait for the signal we cannot ignore
    time.sleep(1)
