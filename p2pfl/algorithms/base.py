"""The interface of a gossip algorithm and the packet it exchanges.

A gossip algorithm is a pure update rule over flat parameter vectors.  Per
round the node loop calls :meth:`outgoing` once (what to send to every
neighbour), :meth:`decode` on each neighbour's packet, and :meth:`mix` with
what arrived.  It owns its state (public copies, residuals) and knows nothing
of sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .robust import parse_robust, robust_step

__all__ = ["Packet", "GossipAlgorithm", "dense_packet", "dense_tensor", "renormalised",
           "all_finite", "within_range", "MAX_MAGNITUDE"]

#: The largest magnitude a peer's update or public copy may carry: far above any
#: weight a model trains to, far below float32's 3.4e38, so that sums of many such
#: values (a public copy moved round after round, a consensus step, a server's mean
#: and residual) stay finite.  A finite 3e38 overflowed them to inf, and the node
#: failed on its own non-finite model a round later.
MAX_MAGNITUDE = 2.0 ** 64
#: A robust rejoin takes the rule's step over the neighbours' answers this often, as
#: the server's centred clipping iterates (:meth:`GossipAlgorithm.rejoin_robust`).
REJOIN_ITERATIONS = 3
_FLOAT32 = np.dtype("<f4")


@dataclass
class Packet:
    """What travels between neighbours: frames plus how to read them.

    ``codec`` names the codec that produced ``frames``.  Raw fp32 tensors use
    codec ``"none"`` and declare their ``shapes``/``dtypes`` in the header.
    """

    codec: str
    frames: list
    shapes: list = field(default_factory=list)
    dtypes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    round: int = 0  # set by the receiver from the message header
    sender: object = None  # set by the receiver: whose stream (temporal CABAC contexts)


def dense_packet(x: torch.Tensor) -> Packet:
    """A raw little-endian float32 packet of ``x`` (zero-copy view)."""
    arr = _float32_view(x)
    shape = list(arr.shape)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return Packet("none", [memoryview(arr).cast("B")], [shape], ["float32"])


def _float32_view(x: torch.Tensor) -> np.ndarray:
    """``x`` as a C-contiguous float32 numpy array: a view where it is one already (a
    CPU tensor outside autograd: one call, where the general path makes four, in a
    node's every round), else a converted copy."""
    try:
        arr = x.numpy()
    except (RuntimeError, TypeError):  # on a GPU, needs grad, or a dtype numpy lacks
        arr = None
    if arr is None or arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = x.detach().to(torch.float32).contiguous().numpy()
    return arr


def dense_tensor(packet: Packet, numel: int, copy: bool = True,
                 check: bool = True) -> torch.Tensor:
    """Read a raw float32 packet back; its size must match ``numel``, and its values
    must be finite.

    ``copy=False`` returns a view of the received frame where it is writable (no
    copy of a model-sized vector); the caller must then only read it, since with
    in-process peers the frame may be the sender's own buffer.  ``check=False``
    leaves the finiteness test to the caller (D-PSGD's mix makes it in the same
    pass as its sum).
    """
    frames, dtypes = packet.frames, packet.dtypes
    if packet.codec != "none" or len(dtypes) != 1 or dtypes[0] != "float32" \
            or len(frames) != 1:
        raise ValueError("not a raw float32 packet")
    arr = np.frombuffer(frames[0], dtype=_FLOAT32)
    if arr.size != numel:
        raise ValueError(f"packet has {arr.size} values, expected {numel}")
    if copy or not arr.flags.writeable:
        arr = arr.copy()
    tensor = torch.from_numpy(arr)
    if check and not all_finite(tensor):  # a hostile or broken peer: dropped and counted
        raise ValueError("packet holds non-finite values")
    return tensor


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite, in one vectorised pass: a sum is
    finite iff every term is (NaN and ±inf propagate), unless finite terms
    overflow it, which the exact test then settles."""
    return math.isfinite(x.sum().item()) or bool(torch.isfinite(x).all())


def within_range(x: torch.Tensor, limit: float = MAX_MAGNITUDE) -> bool:
    """Whether every value of ``x`` is finite and at most ``limit`` in magnitude:
    one pass (a NaN makes both extremes NaN, and every comparison false)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(lo >= -limit) and bool(hi <= limit)


def renormalised(self_weight: float, weights: dict, arrived,
                 to_self: bool = True) -> tuple[float, dict]:
    """Mixing weights over the neighbours whose message arrived; row i still sums to 1.

    ``to_self`` (synchronous rounds, where a missing message is a failure): a
    missing neighbour's weight w_ij goes to the node itself (w_ii), as in CHOCO's
    Σ_j w_ij (x̂_j − x̂_i) over the fresh copies.  When a link fails both ways (a
    dead, offline or silent neighbour) w_ij and w_ji both move to the diagonal:
    the matrix stays symmetric and doubly stochastic, so the mix keeps the
    network's average.  Otherwise (asynchronous gossip, where a neighbour has
    simply not sent since the last mix) the missing share is spread over self
    and the neighbours heard from, in proportion.
    """
    kept = {j: weights[j] for j in arrived}
    if to_self:
        return self_weight + sum(w for j, w in weights.items() if j not in kept), kept
    total = self_weight + sum(kept.values())
    return self_weight / total, {j: w / total for j, w in kept.items()}


class GossipAlgorithm:
    """Base class: one round is ``outgoing`` → (network) → ``decode`` → ``mix``.

    Parameters
    ----------
    numel : int
        Length of the flat parameter vector.
    self_weight, weights
        Row i of the mixing matrix: w_ii and ``{j: w_ij}`` over the neighbours.
    x0 : torch.Tensor
        The initial model, the same on every node (all build it from the run's seed).
    options
        The rule's resolved options (``Options`` of the class; see ``options.py``).
    seed : int, optional
        Seed of the codec's random generator (stochastic codecs).
    shapes : sequence of tuples, optional
        The parameter tensors' shapes, in flattening order: codecs code each tensor
        on its own (:mod:`~p2pfl.compression.tensorwise`).  None: one flat tensor.
    peer_codecs : sequence of str, optional
        The codec names the run's nodes send with (its codec table): a neighbour's
        message that names another is refused, since a spec sets the decoder's cost
        (a low rank of hundreds costs seconds to orthonormalise).  None: any spec.
    """

    name = "base"
    #: Whether :meth:`mix` (and :meth:`outgoing`) only read ``x`` and :meth:`mix`
    #: returns a new tensor that nothing else holds.  The node then hands over the
    #: live parameter vector as ``x`` and adopts the result, with no copy either way.
    pure_mix = False
    #: Whether :meth:`mix` keeps the neighbours' models for :meth:`neighbour_models`
    #: (an ALIE attacker's view; the node sets it).  Off, they are freed after the
    #: mix: at 10 M parameters each round's two received models are 80 MB a node.
    observe_neighbours = False
    #: Neighbours that said they left (offline, done, or dead), set by an asynchronous
    #: node before each :meth:`mix_async`: a rule that keeps a copy of each neighbour
    #: (CHOCO) leaves theirs out, as a missed round does in synchronous gossip.
    absent: frozenset = frozenset()

    def __init__(self, numel: int, self_weight: float, weights: dict, *,
                 x0: torch.Tensor | None = None, options=None, seed: int | None = None,
                 shapes=None, peer_codecs=None) -> None:
        self.numel = numel
        self.peer_codecs = None if peer_codecs is None else frozenset(peer_codecs)
        self.shapes = shapes
        self.self_weight = float(self_weight)
        self.weights = {j: float(w) for j, w in weights.items()}
        self.options = options
        self.seed = seed
        # --robust, parsed once (robust.py): ("none", 0.0) for rules without the option
        self.robust = parse_robust(getattr(options, "robust", "none"))

    def outgoing(self, x: torch.Tensor) -> Packet:
        """What this node sends to every neighbour this round."""
        raise NotImplementedError

    def full_copies(self) -> dict:
        """``{peer: Packet}`` sent instead of :meth:`outgoing`'s to those peers."""
        return {}

    def decode(self, packet: Packet):
        """Read one neighbour's packet; raise ValueError if it is unusable."""
        raise NotImplementedError

    def mix(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """The new model from ours and the decoded packets that arrived."""
        raise NotImplementedError

    def take_rejected(self) -> list:
        """Neighbours whose decoded packet the last :meth:`mix` found unusable and left
        out (a rule that screens packets as it mixes, like D-PSGD's); the node drops
        and counts them as if :meth:`decode` had refused them."""
        return []

    def mix_async(self, x: torch.Tensor, received: dict) -> torch.Tensor:
        """Without a round barrier: ``received`` maps each neighbour to the list of its
        decoded packets since the last mix, oldest first.  By default the latest
        one counts (it supersedes the others)."""
        return self.mix(x, {j: items[-1] for j, items in received.items() if items})

    def targets(self, online: list) -> list:
        """Who gets this round's packet: every neighbour, by default."""
        return sorted(self.weights)

    def catchup(self, x: torch.Tensor, peer) -> Packet:
        """What ``peer``, back after being away, needs to continue: our model ``x``."""
        return dense_packet(x)

    def rejoin(self, packet: Packet) -> torch.Tensor:
        """Take a neighbour's :meth:`catchup` packet; return the model to continue from.

        Raises ValueError if the packet is unusable."""
        return self.read_catchup(packet)[0]

    def read_catchup(self, packet: Packet) -> tuple:
        """A neighbour's :meth:`catchup` packet as (its model, what else the rule
        takes from it, or None).  Raises ValueError if the packet is unusable."""
        return dense_tensor(packet, self.numel), None

    def rejoin_robust(self, x: torch.Tensor, answers: dict,
                      weights: dict | None = None) -> torch.Tensor:
        """Under ``--robust``: the model to continue from, given the neighbours' answers
        ``{j: read_catchup(packet)}`` and our own model ``x`` (out of date, or the
        initial one), where some neighbours may lie; ``weights`` the w_ij to weigh them
        by (None: :attr:`weights`, this round's).

        The round's rule (ClippedGossip or BRIDGE-T, :func:`~.robust.robust_step`) is
        taken :data:`REJOIN_ITERATIONS` times, each from the last result, as centred
        clipping (Karimireddy, He and Jaggi 2021, ALGORITHMS.md) iterates
        v ← v + (1/n) Σ_i clip(x_i − v, τ) L times from the last aggregate:
        x ← x + Σ_j w_ij · robust(x_j − x).  A lying neighbour then moves the model
        as far as it could in that many rounds (under clipping, w_ij · τ a step), where
        taking the first answer whole let it set the model; an honest majority moves
        it most of the way (BRIDGE-T keeps 1/(k − 2b + 1) of the old model a step).
        Iterating to the fixed point would adopt a lone answer whole.
        """
        models = {j: model for j, (model, _) in answers.items()}
        weights = self.weights if weights is None else weights
        for _ in range(REJOIN_ITERATIONS):
            x = x + robust_step(x, models, weights, self.robust)
        return x

    def restarted(self) -> None:
        """This process replaces one that died: what it held of its neighbours (built
        from the initial model) is not theirs.  Stateless rules keep nothing."""

    def came_back(self) -> None:
        """The node was offline: what it holds of its neighbours missed their updates
        meanwhile, and (asynchronous gossip) nothing marked it, so it is treated as
        after a restart: not theirs until they resend it."""
        self.restarted()

    def neighbour_models(self) -> list:
        """The neighbours' models as last seen (what an ALIE attacker observes)."""
        return []

    def resync_requests(self, rnd: int) -> list:
        """Neighbours whose full state we need (compressed gossip only)."""
        return []

    def on_resync_request(self, peer) -> None:
        """``peer`` asked for our full state."""
