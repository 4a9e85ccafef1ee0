"""What nodes report to the launcher, checked before the launcher computes with it.

A run member is trusted to run, not to be well formed: one record whose round is
a string, a model frame of three bytes, or a bye whose ``dropped`` maps to strings
ended the launcher (a ValueError or TypeError in the sink or the summary), so the
run left no summary.  Each record, and each field of a bye, is checked here against
the shape the launcher uses: the fields it computes with by type, and every record
(a strategy's summary fields too) by whether it can be written as JSON (a field
nested a thousand lists deep could not).  What does not fit is left out and counted
(``bad_report``), and the rest of the run goes on.  A bye's unknown fields are left
out too.  A record must be of the node that sent it: one member cannot file records
under another's id.

Pure functions of a message's fields; nothing here talks to a node.
"""

from __future__ import annotations

import json

from .metrics import json_line
from .signals import STOPPED_BY

__all__ = ["checked_records", "checked_final", "MAX_ROUND"]

MAX_ROUND = 1 << 31
#: record fields the launcher averages or sums: a number or None
_MEASURES = ("accuracy", "global_accuracy", "ensemble_accuracy", "loss", "test_loss")
#: byte counts every record holds (runtime.Runtime.report), summed into the totals
_RECORD_COUNTS = ("bytes_sent", "bytes_received")
#: a bye's counters the summary sums: integers
_FINAL_COUNTS = ("bytes_sent", "bytes_received", "bytes_sent_unrecorded",
                 "bytes_received_unrecorded", "handshake_bytes", "messages_sent",
                 "emulated_lost", "wire_bytes", "framing_bytes", "setup_bytes", "pid",
                 "peak_rss_bytes", "pss_bytes", "model_messages", "num_samples", "num_params",
                 "rounds_served", "instructions_skipped", "rounds_done")
_FINAL_PAIRS = ("sent_per_peer", "received_per_peer", "misses")  # [[peer, count], ...]
_FINAL_TALLIES = ("dropped", "errors")  # {reason: count}
_FINAL_TEXT = ("device", "behaviour", "role")
#: what a server strategy adds to summary.json (its ``summary()``), and nothing else
STRATEGY_KEYS = frozenset({"clusters", "split_rounds", "splits", "fd_bits", "fd_delta",
                           "fd_coder"})


def _count(v) -> bool:
    return type(v) is int  # a bool is not a count


def _number(v) -> bool:
    return type(v) in (int, float)


def _record_ok(rec, node) -> bool:
    """Plain loops and C-level type sets: the launcher checks every record of every
    node, each round."""
    if not isinstance(rec, dict) or set(map(type, rec)) - _STR:
        return False  # keys other than strings
    if type(rec.get("node")) is not type(node) or rec["node"] != node:
        return False  # another node's id: one member may not report for another
    rnd = rec.get("round")
    if type(rnd) is not int or not 0 <= rnd <= MAX_ROUND:
        return False
    for key in _RECORD_COUNTS:
        if not _count(rec.get(key)):
            return False
    for key in _MEASURES:
        value = rec.get(key)
        if value is not None and not _number(value):
            return False
    clusters = rec.get("cluster_accuracy")  # CFL: one per cluster
    if clusters is not None and not (isinstance(clusters, list) and all(map(_number, clusters))):
        return False
    return _writable(rec)


#: values any JSON writer takes (json_line writes NaN and infinities as null)
_SCALARS = frozenset({int, float, str, bool, type(None)})
_STR = frozenset({str})


def _writable(value, line=json_line) -> bool:
    """Whether ``value`` can be written as JSON (what the sink and summary do).  A map
    of plain values always can (a round's record, mostly, which is then not written
    out twice); anything else is written to see."""
    if isinstance(value, dict) and set(map(type, value.values())) <= _SCALARS:
        return True  # its keys are strings (checked by the caller)
    try:
        line(value)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def checked_records(meta: dict, frames, node) -> tuple[list, object, int]:
    """``(records, vector frame or None, how many items were left out)`` of a
    ``metrics`` message from ``node``.  The frame (the last record's model) must be
    whole float32 values, and is kept only with a well-formed last record."""
    records = meta.get("records")
    if not isinstance(records, list):
        return [], None, 1
    good = [r for r in records if _record_ok(r, node)]
    bad = len(records) - len(good)
    vector = frames[0] if frames else None
    if vector is not None:
        n = len(memoryview(vector).cast("B"))
        last_ok = bool(good) and records[-1] is good[-1]
        if n == 0 or n % 4 or not last_ok:
            vector, bad = None, bad + 1
    return good, vector, bad


def _pairs_ok(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 2 and type(p[0]) in (int, str) and _count(p[1])
        for p in v)


def _tally_ok(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _count(n) for k, n in v.items())


def checked_final(meta: dict, node) -> tuple[dict, int]:
    """A bye's final counters from ``node`` with every malformed field left out, and
    how many were.  The node's id must be its own, or nothing is kept."""
    if type(meta.get("node")) is not type(node) or meta["node"] != node:
        return {}, 1
    out, bad = {}, 0
    for key, value in meta.items():
        if key in _FINAL_COUNTS:
            ok = _count(value)
        elif key in _FINAL_PAIRS:
            ok = _pairs_ok(value)
        elif key in _FINAL_TALLIES:
            ok = _tally_ok(value)
        elif key in _FINAL_TEXT:
            ok = isinstance(value, str)
        elif key == "signal":  # a node stopped mid-run by one (worker.py)
            ok = isinstance(value, str) and value in STOPPED_BY
        elif key == "absent":
            ok = isinstance(value, list) and all(type(j) in (int, str) for j in value)
        elif key == "strategy":  # a server strategy's own summary fields
            ok = isinstance(value, dict) and set(value) <= STRATEGY_KEYS and \
                _writable(value, json.dumps)
        else:
            ok = key == "node"
        if ok:
            out[key] = value
        else:
            bad += 1
    return out, bad
