"""summary.json's wire_bytes_total against a packet capture of the node ports (issue 10).

    sudo python benchmarks/wire_bytes.py

``ring:4 --dataset digits --rounds 10``, dense, ``stc:0.05+golomb`` and ``--secure``: the
TCP payload captured on loopback on every node's data port (both directions; a byte
that TCP sent twice counted once, and its resends reported apart), next to
``wire_bytes_total`` and its parts (application bytes, ZMTP framing, connection set-up).
Writes benchmarks/results/wire_bytes.json.  Needs root (a raw packet socket).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from p2pfl.metrics import write_json_atomic  # noqa: E402
from p2pfl.transport.probe import LoopbackCapture, can_capture  # noqa: E402

RUNS = {"dense": (), "stc:0.05+golomb": ("--compression", "stc:0.05+golomb"),
        "dense --secure": ("--secure",)}


def measure(name: str, flags: tuple, tmp: str) -> dict:
    out = os.path.join(tmp, name.replace(" ", "_").replace(":", "_"))
    args = ["--topology", "ring:4", "--dataset", "digits", "--rounds", "10", "-q", *flags]
    print("  $ p2pfl cluster " + " ".join(args), flush=True)
    with LoopbackCapture() as cap:
        subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", *args, "--out", out],
                       cwd=ROOT, check=True)
    with open(os.path.join(out, "nodes.json")) as fh:
        ports = {int(n["address"].rsplit(":", 1)[1]) for n in json.load(fh)}
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    streams = cap.tcp_streams(ports)  # each byte of a stream once; TCP's resends apart
    captured = sum(n for n, _ in streams.values())
    resent = sum(r for _, r in streams.values())
    app = s["bytes_sent_counted_by_nodes"] + s["handshake_bytes"]
    row = {"captured_tcp_payload": captured, "resent_by_tcp": resent,
           "wire_bytes_total": s["wire_bytes_total"],
           "application_bytes": app, "framing_bytes_total": s["framing_bytes_total"],
           "setup_bytes_total": s["setup_bytes_total"],
           "error": (s["wire_bytes_total"] - captured) / captured,
           "wire_over_application": s["wire_bytes_total"] / app}
    print(f"  {name:16s} captured {captured:>10,} B | wire_bytes_total "
          f"{s['wire_bytes_total']:>10,} B ({100 * row['error']:+.3f} %) | application "
          f"{app:,} + framing {s['framing_bytes_total']:,} + set-up "
          f"{s['setup_bytes_total']:,} ({100 * (row['wire_over_application'] - 1):.1f} % "
          f"over application bytes) | resent by TCP {resent:,} B")
    return row


def main() -> None:
    why = can_capture()
    if why:
        sys.exit(f"wire_bytes.py: {why}")
    with tempfile.TemporaryDirectory(prefix="p2pfl-wire-") as tmp:
        rows = {name: measure(name, flags, tmp) for name, flags in RUNS.items()}
    write_json_atomic(os.path.join(ROOT, "benchmarks", "results", "wire_bytes.json"), rows)


if __name__ == "__main__":
    main()
