"""A cluster run under a loopback packet capture, alone on its loopback if it can be.

Run as a script (``python tests/_capture.py OUT ARGS...``), it captures ``lo``
while ``p2pfl cluster ARGS --out OUT`` runs and prints, as JSON, the TCP payload
captured to or from the nodes' data ports, in all and per connection.

:func:`capture_cluster` runs that script inside a network namespace of its own
(its loopback brought up, nothing else in it), when root and iproute2 allow:
on the shared loopback, another process's connection that happens to use one of
the nodes' port numbers (before a node binds it, or after it closes) would be
captured with the run's bytes.  Otherwise the script runs here, on the shared
loopback.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ip(*args) -> bool:
    return subprocess.run(["ip", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def private_loopback():
    """The command prefix that runs a process in a fresh namespace with only ``lo``
    up (removed afterwards), or ``[]`` where one cannot be made."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield []
        return
    name = f"p2pfl-cap-{secrets.token_hex(3)}"
    if not _ip("netns", "add", name):
        yield []
        return
    try:
        yield ["ip", "netns", "exec", name] if _ip("-n", name, "link", "set", "lo", "up") else []
    finally:
        _ip("netns", "del", name)


def capture_cluster(out, *args, timeout: float = 300) -> dict:
    """``{"captured": bytes, "connections": {"sport>dport": bytes}, "isolated": bool}``
    for ``p2pfl cluster ARGS -q --out OUT``, which must exit 0."""
    with private_loopback() as prefix:
        res = subprocess.run([*prefix, sys.executable, os.path.abspath(__file__), str(out),
                              *map(str, args)], cwd=ROOT, check=True, timeout=timeout,
                             capture_output=True, text=True)
    return dict(json.loads(res.stdout.splitlines()[-1]), isolated=bool(prefix))


def _main(out: str, args: list) -> None:
    sys.path.insert(0, ROOT)
    from p2pfl.transport.probe import LoopbackCapture

    with LoopbackCapture() as cap:
        subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", *args, "-q", "--out",
                        out], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "nodes.json")) as fh:
        ports = {int(n["address"].rsplit(":", 1)[1]) for n in json.load(fh)}
    per = collections.Counter()
    for sport, dport, payload in cap.tcp_segments(ports):
        per[f"{sport}>{dport}"] += len(payload)
    print(json.dumps({"captured": sum(per.values()), "connections": dict(per)}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
