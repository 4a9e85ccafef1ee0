"""Build hook: the optional C core of the CABAC entropy coder.

The extension is optional: without a C compiler the package still installs and
``p2pfl.compression.cabac`` falls back to its pure numpy/Python coder.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "p2pfl.compression._cabac",
            sources=["p2pfl/compression/_cabac.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
