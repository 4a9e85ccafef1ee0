"""The metrics sink: per-node, per-round JSON lines, the consensus distance, the summary.

Records arrive from the nodes in any order.  A round is written to
``metrics.jsonl`` (and flushed) as soon as every live node has reported it,
together with each node's distance to the network mean of the models sent for
that round.  ``summary.json`` and other result files are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import Counter, defaultdict

import numpy as np

from . import atomic

__all__ = ["MetricsSink", "write_json_atomic", "json_text", "strict_json", "read_metrics",
           "consensus_distances"]


def write_json_atomic(path: str, obj) -> None:
    """Write :func:`json_text` of ``obj`` to ``path`` atomically."""
    atomic.write_atomic(path, lambda fh: fh.write(json_text(obj)), text=True)


def json_text(obj) -> str:
    """``obj`` as indented strict JSON (:func:`strict_json`), a newline at the end: what
    the run's JSON files hold."""
    return json.dumps(strict_json(obj), indent=2, default=_plain) + "\n"


def strict_json(obj):
    """``obj`` as strict JSON values: numpy scalars and arrays as plain numbers and
    lists, and NaN or ±inf (a diverged model's loss, say) as null.  Python's
    ``json`` would write ``NaN`` and ``Infinity``, which jq, JavaScript and most
    JSON parsers refuse."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return strict_json(obj.tolist())
    return obj


def json_line(record: dict) -> str:
    """One strict-JSON line: the plain encoder, unless the record holds NaN or ±inf
    (rare: a diverged model), which :func:`strict_json` then turns into null."""
    try:
        return _STRICT.encode(record) + "\n"
    except ValueError:
        return _LENIENT.encode(strict_json(record)) + "\n"


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


#: built once: ``json.dumps`` with options builds an encoder a call (the launcher writes
#: a line for every record of every node)
_STRICT = json.JSONEncoder(default=_plain, allow_nan=False)
_LENIENT = json.JSONEncoder(default=_plain)


def read_metrics(path: str) -> list[dict]:
    """Read a ``metrics.jsonl`` file (a truncated last line is skipped)."""
    out = []
    with open(path) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def consensus_distances(vectors: dict) -> tuple[dict, dict]:
    """Each node's distance to the mean model, absolute and relative.

    ``‖x_i − x̄‖`` and ``‖x_i − x̄‖ / ‖x̄‖`` with x̄ = (1/n) Σ_i x_i over the
    models in ``vectors`` (``{node: flat array}``).  The relative form does not
    grow merely because the weights do.  ``None`` where ‖x̄‖ = 0.
    """
    if not vectors:
        return {}, {}
    size = Counter(len(v) for v in vectors.values()).most_common(1)[0][0]
    order = sorted(n for n, v in vectors.items() if len(v) == size)  # a broken one apart
    stack = np.stack([vectors[n] for n in order]).astype(np.float64)
    mean = stack.mean(axis=0)
    dist = np.linalg.norm(stack - mean, axis=1).tolist()
    norm = float(np.linalg.norm(mean))
    rel = [d / norm if norm > 0 else None for d in dist]
    return dict(zip(order, dist)), dict(zip(order, rel))


class MetricsSink:
    """Collects round records, writes them as JSON lines, and summarises the run.

    Parameters
    ----------
    out_dir : str
        The run folder.
    nodes : list
        The node ids whose records are expected.
    on_round : callable, optional
        Called as ``on_round(round, rows)`` when a round is complete.
    closer : optional
        In server modes not every node reports every round (partial
        participation): a round is complete when this node (the coordinator)
        has reported it.  Records that arrive later are written as they come.
    rounds : int, optional
        The run's rounds.  A gossip node that says bye before its last round because
        the run is ending early (``--target-accuracy``, Ctrl-C: ``node_gone(stopped=True)``)
        leaves the rounds after its last one written without it, but not whole; so does
        the closer, whatever ended it (the workers' records of a round it did not play).

    The network mean of the consensus distance, ``accuracy_per_round`` and
    ``consensus_last`` are taken over whole rounds only: a round some nodes never
    played because the run was stopped (or still held when the sink closes) is
    written, but its records get no consensus distance (that of a lone record would
    be 0) and their accuracies count only as their nodes' last ones.
    """

    def __init__(self, out_dir: str, nodes, on_round=None, closer=None,
                 rounds: int | None = None, on_write_error=None) -> None:
        self.out_dir = out_dir
        # metrics.jsonl could not be written (a full disk): the first error, passed once
        # to ``on_write_error``; the records are then only folded into the figures
        self.write_error: OSError | None = None
        self.on_write_error = on_write_error
        self.live = set(nodes)
        self.known = set(nodes)
        self.since: dict = {}  # node back from offline -> first round it reports again
        self.on_round = on_round
        self.closer = closer
        self.rounds = rounds
        self._last: dict = {}  # node -> the last round it recorded
        # a node after whose last round no round is whole (a gossip node stopped early,
        # the closer gone) -> that round
        self._stopped: dict = {}
        # What the summary needs, kept as the records are written; the records themselves
        # are in metrics.jsonl only (a long run's would fill the launcher's memory).
        self.written = 0  # records written
        self.bytes_sent = self.bytes_received = 0  # over the records written so far
        self.closer_records: list[dict] = []  # the coordinator's: one a round
        self.closer_bytes_sent = 0
        self._accuracy = _AccuracyTable(nodes)
        self._consensus: tuple = (None, [])  # (last round with a distance, its rows)
        self._pending: dict = defaultdict(dict)  # round -> node -> [(record, vector)]
        self._next_round = 1
        # unbuffered: each round's lines go down in one write, or are taken back
        self._fh = open(os.path.join(out_dir, "metrics.jsonl"), "wb", buffering=0)
        self._size = 0  # the bytes of whole lines written

    def add(self, record: dict, vector: np.ndarray | None = None) -> None:
        """Accept one node's record of one round (and its model, if sent)."""
        rnd = int(record["round"])
        node = record["node"]
        self._last[node] = max(rnd, self._last.get(node, 0))
        if record.get("offline"):  # gone offline: rounds complete without it until it is back
            self.live.discard(node)
        elif node in self.known and node not in self.live:
            self.live.add(node)  # back: rounds from this one on wait for it again
            self.since[node] = rnd
        if rnd >= self._next_round:  # a node may record a round twice (an early stop's
            # last round, then its final model): both records are kept
            self._pending[rnd].setdefault(node, []).append((dict(record), vector))
            self._drain()
        else:  # a straggler's record for a round already written: no network mean
            self._write_rows({node: [(dict(record), vector)]}, whole=False, per_round=True)

    def node_paused(self, node) -> None:
        """A node died and is being restarted: rounds complete without it until its
        next record (from the round it catches up to)."""
        self.live.discard(node)
        self.known.add(node)  # it may have been given up for dead before it came back
        self._drain()

    def node_gone(self, node, stopped: bool = False) -> None:
        """A node finished or died: stop waiting for its records.  ``stopped``: it said
        bye because the run is ending early; a gossip node that had rounds left then
        makes the later rounds not whole (not one offline meanwhile: the rounds went
        on without it)."""
        if stopped and node in self.live and self.closer is None \
                and self.rounds is not None and self._last.get(node, 0) < self.rounds:
            self._stopped[node] = self._last.get(node, 0)
        if node == self.closer:  # no round after its last is whole: the workers' records
            self._stopped[node] = self._last.get(node, 0)  # of a cut one are written alone
        self.live.discard(node)
        self.known.discard(node)
        self._drain()

    def _drain(self) -> None:
        while self._pending.get(self._next_round) is not None:
            rows = self._pending[self._next_round]
            closed = self.closer is not None and self.closer in rows
            if not closed and len(rows) + len(self.since) < len(self.live):
                return  # too few rows to be complete: no need to look closer
            needed = {n for n in self.live if self.since.get(n, 0) <= self._next_round}
            if not (needed <= rows.keys() or closed):
                return
            self._write_round(self._next_round, self._pending.pop(self._next_round))
            self._next_round += 1

    def _write_round(self, rnd: int, rows: dict, whole: bool = True, tell: bool = True) -> None:
        """``tell``: hand it to ``on_round`` (not a round left incomplete at the end)."""
        whole = whole and all(last >= rnd for last in self._stopped.values())
        out = self._write_rows(rows, whole, per_round=whole)
        if self.on_round and tell:  # a node's latest record of the round stands for it
            self.on_round(rnd, list({rec["node"]: rec for rec in out}.values()))

    def _write_rows(self, rows: dict, whole: bool, per_round: bool) -> list:
        """Write ``{node: [(record, vector), ...]}``; a node's latest model stands for it
        in the network mean, taken when the rows are a ``whole`` round; ``per_round``:
        their accuracies count in ``accuracy_per_round``."""
        vectors = {n: v for n, recs in rows.items() for _, v in recs if v is not None}
        # over the nodes that played (online); one alone has distance 0, which says nothing
        dist, rel = consensus_distances(vectors) if whole and len(vectors) > 1 else ({}, {})
        out = []
        for node in sorted(rows):
            for rec, v in rows[node]:
                mine = v is not None and v is vectors[node]
                rec["consensus_distance"] = dist.get(node) if mine else None
                rec["consensus_distance_rel"] = rel.get(node) if mine else None
                self._note(rec, per_round)
                out.append(rec)
        self._append("".join(json_line(rec) for rec in out), len(out))
        return out

    def _append(self, text: str, count: int) -> None:
        """Append ``count`` records' lines to metrics.jsonl; after a write that failed
        (a full disk), the part of it that went down is cut off again (it left a torn
        last line, ``{"round": 29, "no``), and nothing more is written: a reader finds
        whole lines only."""
        if self.write_error is not None:
            return
        raw = text.encode()
        data = memoryview(raw)
        try:
            while data:
                data = data[self._fh.write(data):]
        except OSError as exc:  # the file's name with it, as open() would give
            self.write_error = OSError(exc.errno, exc.strerror or str(exc), self._fh.name)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), self._size)
            if self.on_write_error is not None:
                self.on_write_error(self.write_error)
            return
        self._size += len(raw)
        self.written += count

    def _note(self, rec: dict, per_round: bool) -> None:
        """Fold one written record into what the summary needs."""
        sent = rec.get("bytes_sent") or 0
        self.bytes_sent += sent
        self.bytes_received += rec.get("bytes_received") or 0
        if rec["node"] == self.closer:
            self.closer_records.append(rec)
            self.closer_bytes_sent += sent
        if rec.get("accuracy") is not None:
            self._accuracy.add(rec["round"], rec["node"], rec["accuracy"], per_round)
        if rec.get("consensus_distance") is not None:
            rnd = self._consensus[0]
            if rnd is None or rec["round"] > rnd:  # a later round: its rows start afresh
                self._consensus = (rec["round"], [])
            if rec["round"] == self._consensus[0]:  # an earlier one's straggler is not
                self._consensus[1].append((rec["consensus_distance"],
                                           rec.get("consensus_distance_rel")))

    def close(self) -> None:
        """Write any incomplete rounds that remain (nodes that died mid-run)."""
        for rnd in sorted(self._pending):
            self._write_round(rnd, self._pending.pop(rnd), whole=False, tell=False)
        self._fh.close()

    # ---------------------------------------------------------------- summary
    def accuracy_by_node(self) -> dict:
        """Each node's last measured test accuracy."""
        return dict(self._accuracy.last)

    def accuracy_per_round(self) -> list:
        """``[[round, mean accuracy], ...]`` over the rounds that were evaluated."""
        return self._accuracy.means()

    def consensus_last(self) -> dict | None:
        """Median and max consensus distance (absolute and relative) in the last measured round."""
        rnd, rows = self._consensus
        if rnd is None:
            return None
        out = {"round": rnd}
        for i, name in ((0, ""), (1, "rel_")):
            vals = [row[i] for row in rows if row[i] is not None]
            out[name + "median"] = float(np.median(vals)) if vals else None
            out[name + "max"] = float(np.max(vals)) if vals else None
        return out

    def summary(self, exclude=frozenset()) -> dict:
        """The per-run figures derived from the records; the final accuracies leave
        out the nodes in ``exclude`` (those that failed)."""
        acc = [a for node, a in self.accuracy_by_node().items() if node not in exclude]
        return {
            "accuracy_mean": float(np.mean(acc)) if acc else None,
            "accuracy_min": float(np.min(acc)) if acc else None,
            "accuracy_max": float(np.max(acc)) if acc else None,
            "bytes_sent_total": int(self.bytes_sent),
            "bytes_received_total": int(self.bytes_received),
            "accuracy_per_round": self.accuracy_per_round(),
            "consensus_last": self.consensus_last(),
        }


class _AccuracyTable:
    """Each evaluated round's latest accuracy of each node, in one array a round (9
    bytes a node), and each node's last accuracy: what the summary's accuracy figures
    need, without keeping the records."""

    def __init__(self, nodes) -> None:
        self.slot = {n: i for i, n in enumerate(sorted(set(nodes)))}
        self.rows: dict = {}  # round -> (values, present)
        self.last: dict = {}

    def add(self, rnd: int, node, acc: float, per_round: bool = True) -> None:
        self.last[node] = acc
        if not per_round:
            return
        i = self.slot.get(node)
        if i is None:  # not a node the sink was told of: it gets a slot now
            i = self.slot[node] = len(self.slot)
            for rnd_, (values, present) in list(self.rows.items()):
                self.rows[rnd_] = np.append(values, np.nan), np.append(present, False)
        row = self.rows.get(rnd)
        if row is None:
            n = len(self.slot)
            row = self.rows[rnd] = (np.full(n, np.nan), np.zeros(n, bool))
        row[0][i], row[1][i] = acc, True

    def means(self) -> list:
        return [[r, float(np.mean(values[present]))]
                for r, (values, present) in sorted(self.rows.items())]
