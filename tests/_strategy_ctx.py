"""Build strategy contexts and clients for tests, from RunConfig-style keyword options.

The options are resolved exactly as the plan resolves them (the strategy's
``Options.from_config``), so tests exercise the same values a run would.
"""

import torch

from p2pfl.config import MODE_OPTIONS, RunConfig
from p2pfl.spec import LearnSpec, RuntimeSpec
from p2pfl.strategies import STRATEGIES, ServerContext

DEFAULTS = {"rounds": 5, "participation": 1.0, "seed": 0, "compression": "stc:0.05+golomb",
            "compression_down": "stc:0.05+golomb", "stc_cache": 3, "cfl_eps1": 0.5,
            "cfl_eps2": 1.0, "cfl_warmup": 0, "fd_bits": 1, "fd_delta": "on",
            "dataset": "digits", "public_size": 50, "distill_steps": 1}


def config(mode: str, **kw) -> RunConfig:
    values = dict(DEFAULTS, mode=mode, **kw)
    if mode != "stc":  # the codec defaults are STC's; other modes send raw unless asked
        values["compression"] = kw.get("compression", "none")
        values["compression_down"] = kw.get("compression_down", "auto")
    for name, modes in MODE_OPTIONS.items():  # a mode refuses the others' options
        if mode not in modes and name not in kw:
            values.pop(name, None)
    if isinstance(values.get("fd_delta"), bool):
        values["fd_delta"] = "on" if values["fd_delta"] else "off"
    return RunConfig(**values)


def options(mode: str, **kw):
    return STRATEGIES[mode].options.from_config(config(mode, **kw))


def learn_spec(cfg: RunConfig, behaviour: str = "honest", num_nodes: int = 4) -> LearnSpec:
    return LearnSpec(dataset=cfg.dataset, data_dir=None, partition=cfg.partition, seed=cfg.seed,
                     num_nodes=num_nodes, shares=(1.0,) * num_nodes, model=cfg.model, lr=cfg.lr,
                     momentum=cfg.momentum, weight_decay=0.0, batch_size=cfg.batch_size,
                     local_steps=cfg.local_steps, local_epochs=0, behaviour=behaviour)


def server_ctx(mode: str, workers=(0, 1, 2, 3), groups=None, n=200, init=None, **kw):
    cfg = config(mode, **kw)
    return ServerContext(
        options=STRATEGIES[mode].options.from_config(cfg), learn=learn_spec(cfg),
        runtime=RuntimeSpec(rounds=cfg.rounds, round_timeout=1.0, start_timeout=1.0),
        workers=list(workers), labels={w: f"w{w}" for w in workers},
        init=torch.zeros(n) if init is None else init,
        evaluate=lambda flat, group=0: (0.0, 0.5), groups=groups or {})


def client(mode: str, learner, behaviour: str = "honest", **kw):
    cfg = config(mode, **kw)
    return STRATEGIES[mode].client(learner, STRATEGIES[mode].options.from_config(cfg),
                                   learn_spec(cfg, behaviour))


class FakeLearner:
    """The part of a Learner a server-mode client touches: a flat vector of ``n``."""

    num_samples, _node_id = 10, 0

    def __init__(self, n: int) -> None:
        self.num_params = n
        self.flat = torch.zeros(n)

    def get_flat(self):
        return self.flat.clone()

    def set_flat(self, x):
        self.flat = x.clone()
