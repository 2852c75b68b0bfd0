#!/usr/bin/env python3
"""Publish logsight batches over ZeroMQ PUB, for the integration tests.

    $LOGSIGHT_TEST_PYTHON scripts/zmq_publish.py --endpoint tcp://127.0.0.1:5559 \
        --topic logs [--repeat N] [--interval-ms MS] [--wait-ms MS] FILE

Each non-empty line of FILE ('-' = stdin; one logsight batch JSON per line) is sent
as one single-frame message "<topic> <line>". Lines are sent as they are (no JSON
check), so tests can also send malformed input.

The PUB socket BINDs the endpoint (the subscriber under test connects), then waits
--wait-ms (default 1000) so that subscribers can connect before the first message
(ZeroMQ's slow-joiner problem: a PUB drops messages for subscribers that have not
connected yet). --repeat N sends the whole file N times; --interval-ms pauses
between two consecutive messages. At the end the socket lingers up to --linger-ms
(default 2000) to flush queued messages. Prints a one-line summary on stderr.
Exit codes: 0 sent, 1 bind/IO error, 2 usage.

Needs pyzmq: scripts/services.sh installs it in its venv ($LOGSIGHT_TEST_PYTHON).
Started with another python that lacks pyzmq, it re-runs itself with
$LOGSIGHT_TEST_PYTHON or <repo>/.services/venv/bin/python when present.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _import_zmq():
    try:
        import zmq  # noqa: PLC0415

        return zmq
    except ImportError:
        pass
    candidates = []
    if os.environ.get("LOGSIGHT_TEST_PYTHON"):
        candidates.append(os.environ["LOGSIGHT_TEST_PYTHON"])
    services = os.environ.get("LOGSIGHT_SERVICES_DIR") or str(Path(__file__).resolve().parent.parent / ".services")
    candidates.append(os.path.join(services, "venv", "bin", "python"))
    if not os.environ.get("_LOGSIGHT_ZMQ_REEXEC"):
        for py in candidates:
            if os.path.isfile(py) and os.access(py, os.X_OK) and os.path.abspath(py) != os.path.abspath(sys.executable):
                os.environ["_LOGSIGHT_ZMQ_REEXEC"] = "1"
                os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(
        "zmq_publish.py: pyzmq is not installed for %s; run scripts/services.sh install zmq "
        "and use $LOGSIGHT_TEST_PYTHON" % sys.executable
    )


def main() -> int:
    ap = argparse.ArgumentParser(description="Publish each line of FILE as '<topic> <line>' on a ZeroMQ PUB socket that binds ENDPOINT.")
    ap.add_argument("file", metavar="FILE", help="one logsight batch JSON per line; '-' for stdin")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5559", help="endpoint to bind (default: %(default)s)")
    ap.add_argument("--topic", default="logs", help="topic prefix of every message (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="send the file N times (default: 1)")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="pause between two messages (default: 0)")
    ap.add_argument("--wait-ms", type=float, default=1000.0, help="wait after bind for subscribers (default: 1000)")
    ap.add_argument("--linger-ms", type=int, default=2000, help="max time to flush at close (default: 2000)")
    ap.add_argument("--quiet", action="store_true", help="no summary on stderr")
    args = ap.parse_args()
    if args.repeat < 0 or args.interval_ms < 0 or args.wait_ms < 0 or args.linger_ms < 0:
        ap.error("--repeat, --interval-ms, --wait-ms and --linger-ms must be >= 0")

    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            raw = Path(args.file).read_bytes()
    except OSError as e:
        print(f"zmq_publish.py: cannot read {args.file}: {e}", file=sys.stderr)
        return 1
    lines = [ln.rstrip(b"\r") for ln in raw.split(b"\n")]
    lines = [ln for ln in lines if ln.strip()]
    prefix = args.topic.encode() + b" "

    zmq = _import_zmq()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # no high-water mark: never drop because of queue size
    sock.setsockopt(zmq.LINGER, args.linger_ms)
    try:
        sock.bind(args.endpoint)
    except zmq.ZMQError as e:
        print(f"zmq_publish.py: cannot bind {args.endpoint}: {e}", file=sys.stderr)
        sock.close(0)
        ctx.term()
        return 1

    time.sleep(args.wait_ms / 1000.0)
    sent = 0
    started = time.monotonic()
    try:
        for _ in range(args.repeat):
            for line in lines:
                if sent and args.interval_ms:
                    time.sleep(args.interval_ms / 1000.0)
                sock.send(prefix + line)
                sent += 1
    finally:
        sock.close()  # waits up to LINGER for queued messages
        ctx.term()
    if not args.quiet:
        print(
            f"zmq_publish.py: sent {sent} message(s) ({len(lines)} line(s) x {args.repeat}) "
            f"on {args.endpoint} topic {args.topic!r} in {time.monotonic() - started:.2f}s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
