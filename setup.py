"""The one compiled part: VectorCusum's inner loops (src/streamheal/detectors/_loops.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler
the build goes on without it and cusum.py computes the same numbers with numpy (about
2 us per event slower with every detector on; `streamheal bench --json` says which ran).
"""

import sys

from setuptools import Extension, setup

# Bit-identical to numpy's arithmetic: no fused multiply-add where the C says a*b + c.
STRICT_FLOATS = [] if sys.platform == "win32" else ["-O2", "-ffp-contract=off"]

setup(
    ext_modules=[
        Extension(
            "streamheal.detectors._loops",
            ["src/streamheal/detectors/_loops.c"],
            extra_compile_args=STRICT_FLOATS,
            optional=True,
        )
    ]
)
