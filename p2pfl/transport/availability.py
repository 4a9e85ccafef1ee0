"""When a node is offline: fixed intervals, a trace file, or exponential churn.

Times are seconds since the run's start.  A node is offline during any of its
``intervals`` (from a node profile's ``offline = [[start, end], ...]`` or an
``--availability`` trace) and, with ``--churn ON_S:OFF_S[:SEED]``, during the
offline periods of an alternating renewal process with exponential online and
offline times of means ON_S and OFF_S.  The churn process starts in its
stationary state (offline with probability OFF_S / (ON_S + OFF_S)), so the
share of nodes offline is the same from the first second on.  An offline node
neither sends nor receives.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..labels import node_number

__all__ = ["AvailabilitySpec", "Availability", "parse_churn", "read_trace"]


@dataclass(frozen=True)
class AvailabilitySpec:
    """A node's offline intervals and churn parameters (plain data, msgpack-safe)."""

    intervals: tuple = ()
    churn_on_s: float = 0.0
    churn_off_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        spans = tuple((float(a), float(b)) for a, b in self.intervals)
        if any(not 0 <= a < b for a, b in spans):
            raise ConfigError("offline intervals need 0 <= start < end")
        object.__setattr__(self, "intervals", tuple(sorted(spans)))
        if (self.churn_on_s > 0) != (self.churn_off_s > 0) or not (
                math.isfinite(self.churn_on_s) and math.isfinite(self.churn_off_s)):
            raise ConfigError("churn needs positive, finite mean online and offline times")

    @property
    def active(self) -> bool:
        return bool(self.intervals) or self.churn_on_s > 0


#: The shortest mean online or offline time of ``--churn``, in seconds: 1e-9 drew
#: billions of periods and the run hung.
MIN_CHURN_S = 0.01


def parse_churn(text: str) -> tuple:
    """``"ON_S:OFF_S[:SEED]"`` → (on, off, seed)."""
    parts = str(text).split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        on, off = float(parts[0]), float(parts[1])
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ConfigError(f"--churn expects ON_S:OFF_S[:SEED], got {text!r}") from None
    if not (MIN_CHURN_S <= on < math.inf and MIN_CHURN_S <= off < math.inf):
        raise ConfigError(f"--churn: mean online and offline times must be at least "
                          f"{MIN_CHURN_S:g} s and finite, got {text!r}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--churn: SEED must be in [0, 2**32), got {seed}")
    return on, off, seed


def read_trace(path: str, labels: list) -> dict:
    """An availability trace: CSV rows ``node,offline_start_s,offline_end_s``.

    ``node`` is a label or an integer id.  Returns ``{node id: [(start, end), ...]}``.
    A header row is allowed; any other bad row is a ConfigError naming its line.
    """
    index = {str(label): i for i, label in enumerate(labels)}
    out: dict = {}
    try:  # -sig: spreadsheets write a byte-order mark before the header
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ConfigError(f"cannot read availability trace {path}: "
                          f"{exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read availability trace {path}: not UTF-8 CSV "
                          f"({type(exc).__name__})") from None
    for line, row in enumerate(rows, 1):
        if not row or row[0].startswith("#"):
            continue
        if line == 1 and row[0].strip() == "node":
            continue
        where = f"{path}:{line}"
        if len(row) != 3:
            raise ConfigError(f"{where}: expected node,offline_start_s,offline_end_s")
        node = row[0].strip()
        number = node_number(node)
        if node not in index and not (number is not None and number < len(labels)):
            raise ConfigError(f"{where}: unknown node {node[:64]!r}")
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            raise ConfigError(f"{where}: offline times must be numbers") from None
        if not 0 <= start < end:
            raise ConfigError(f"{where}: need 0 <= offline_start_s < offline_end_s")
        out.setdefault(index.get(node, -1 if number is None else number), []).append(
            (start, end))
    return out


class Availability:
    """Answers "offline now?" and "online again when?" for one node."""

    def __init__(self, spec: AvailabilitySpec) -> None:
        self.spec = spec
        self._churn: list = []  # offline periods of the churn process, generated lazily
        self._horizon = 0.0
        if spec.churn_on_s > 0:
            self._rng = np.random.default_rng(spec.seed)
            on, off = spec.churn_on_s, spec.churn_off_s
            self._offline = bool(self._rng.random() < off / (on + off))

    def _extend(self, until: float) -> None:
        on, off = self.spec.churn_on_s, self.spec.churn_off_s
        while self._horizon <= until:
            length = self._rng.exponential(off if self._offline else on)
            if self._offline:
                self._churn.append((self._horizon, self._horizon + length))
            self._horizon += length
            self._offline = not self._offline

    def _spans(self, t: float):
        if self.spec.churn_on_s > 0:
            self._extend(t + 1.0)
        yield from self.spec.intervals
        yield from self._churn

    def offline(self, t: float) -> bool:
        return any(a <= t < b for a, b in self._spans(t))

    def next_offline(self, t: float) -> float:
        """When the first offline period starting after ``t`` begins (inf if none)."""
        if self.spec.churn_on_s > 0:
            while not any(a > t for a, _ in self._churn):
                self._extend(self._horizon + self.spec.churn_on_s + self.spec.churn_off_s)
        return min((a for a, _ in self._spans(t) if a > t), default=float("inf"))

    def online_at(self, t: float) -> float:
        """The first time >= ``t`` at which the node is online."""
        while True:
            ends = [b for a, b in self._spans(t) if a <= t < b]
            if not ends:
                return t
            t = max(ends)
