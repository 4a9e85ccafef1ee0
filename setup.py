"""Build hook: the optional C cores, the CABAC entropy coder and the gossip mix.

Both extensions are optional: without a C compiler the package still installs,
``p2pfl.compression.cabac`` falls back to its pure numpy/Python coder and
``p2pfl.algorithms.kernel`` to torch.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "p2pfl.compression._cabac",
            sources=["p2pfl/compression/_cabac.c"],
            # no straight-line vectorising: packing a context's two estimates into
            # one SSE register made decoding 10 % slower
            extra_compile_args=["-O3", "-fno-tree-slp-vectorize"],
            optional=True,
        ),
        Extension(
            "p2pfl.compression._dq",
            sources=["p2pfl/compression/_dq.c"],
            # no fused multiply-adds: the same path costs as the pure-Python mirror
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
        Extension(
            "p2pfl.algorithms._kernel",
            sources=["p2pfl/algorithms/_kernel.c"],
            # no fused multiply-adds: the same bits from every build
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
    ]
)
