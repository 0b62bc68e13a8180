"""Build configuration beyond pyproject.toml: the optional C accelerator.

``optional=True``: without a C compiler the package installs without it and ring.py uses its
pure-Python path (the same protocol, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("shmfifo._fastpath", ["shmfifo/_fastpath.c"],
                             extra_compile_args=["-O2", "-std=c11"],
                             extra_link_args=["-pthread"], optional=True)])
