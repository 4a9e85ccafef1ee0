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
def private_loopback(drop_every: int | None = None):
    """The command prefix that runs a process in a fresh namespace with only ``lo``
    up (removed afterwards), or ``[]`` where one cannot be made.  ``drop_every``: the
    namespace's firewall drops every n-th TCP segment that carries data as it comes
    in, after a capture sees it, so that TCP sends it again (needs iptables)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield []
        return
    name = f"p2pfl-cap-{secrets.token_hex(3)}"
    if not _ip("netns", "add", name):
        yield []
        return
    try:
        prefix = ["ip", "netns", "exec", name]
        up = _ip("-n", name, "link", "set", "lo", "up")
        if up and drop_every is not None:  # 52 B: an IPv4 and TCP header with timestamps
            up = subprocess.run([*prefix, "iptables", "-A", "INPUT", "-p", "tcp", "-m",
                                 "length", "--length", "53:65535", "-m", "statistic",
                                 "--mode", "nth", "--every", str(drop_every), "--packet", "0",
                                 "-j", "DROP"],
                                capture_output=True).returncode == 0
        yield prefix if up else []
    finally:
        _ip("netns", "del", name)


class CannotDrop(RuntimeError):
    """The namespace's firewall would not take the rule (e.g. no ``statistic`` match)."""


def can_drop() -> str | None:
    """Why :func:`private_loopback` cannot drop segments here (None: it can)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 for a network namespace"
    if shutil.which("iptables") is None:
        return "needs iptables to drop segments in a namespace"
    return None


def capture_cluster(out, *args, timeout: float = 300, drop_every: int | None = None) -> dict:
    """``{"captured": bytes, "resent": bytes, "connections": {"sport>dport": [bytes,
    resent]}, "isolated": bool}`` for ``p2pfl cluster ARGS -q --out OUT``, which must
    exit 0: the TCP payload to or from the nodes' data ports, each byte of a stream
    once, and apart what TCP sent again
    (:meth:`~p2pfl.transport.probe.LoopbackCapture.tcp_streams`)."""
    with private_loopback(drop_every) as prefix:
        if drop_every is not None and not prefix:
            raise CannotDrop("iptables could not add the rule that drops segments")
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
    streams = cap.tcp_streams(ports)
    print(json.dumps({"captured": sum(n for n, _ in streams.values()),
                      "resent": sum(r for _, r in streams.values()),
                      "connections": streams}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
