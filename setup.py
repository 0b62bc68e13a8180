"""Build configuration beyond pyproject.toml: the optional C accelerator.

``optional=True``: without a C compiler the package installs without it and ring.py uses its
pure-Python path (the same protocol, slower). pip shows a build's output only when the build
fails, so the warning below is seen with ``pip install -v``; ``bin/setup``, ``shmfifo --version``
and ``shmfifo doctor`` say it where it is seen without asking.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError, CompileError

WARNING = """
{rule}
WARNING: shmfifo's C accelerator ({name}) was not built:
    {error}
shmfifo installs and works without it, in pure Python, about ten times slower per item.
To build it, install a C compiler and the Python headers (apt install gcc python3-dev),
then reinstall shmfifo. `shmfifo --version` and `shmfifo doctor` show which path runs.
{rule}
"""


class OptionalBuildExt(build_ext):
    """build_ext that says loudly when an optional extension fails to build."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, BaseError) as error:
            # The errors setuptools forgives an optional extension; it then goes on without it.
            if ext.optional:
                sys.stderr.write(WARNING.format(rule="=" * 78, name=ext.name, error=error))
                sys.stderr.flush()
            raise


setup(ext_modules=[Extension("shmfifo._fastpath", ["shmfifo/_fastpath.c"],
                             extra_compile_args=["-O2", "-std=c11"],
                             extra_link_args=["-pthread"], optional=True)],
      cmdclass={"build_ext": OptionalBuildExt})
