"""Builds the optional native BPE core (picochat/tokenizer/fast/_core). Metadata is in pyproject.toml.

The extension is `optional=True`: if it fails to compile (no C++ compiler), the package still
installs and `picochat.tokenizer.fast` falls back to the pure-Python trainer with a warning.
"""

from setuptools import Extension, setup

SOURCES = [f"picochat/tokenizer/fast/{name}.cpp" for name in ("binding", "splitter", "merges")]

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    ext_modules = [Pybind11Extension("picochat.tokenizer.fast._core", SOURCES, cxx_std=17, optional=True,
                                     depends=["picochat/tokenizer/fast/core.hpp"],
                                     extra_compile_args=["-O3", "-pthread"], extra_link_args=["-pthread"])]
    cmdclass = {"build_ext": build_ext}
except ImportError:  # pybind11 is a build requirement; without it, skip the extension
    ext_modules: list[Extension] = []
    cmdclass = {}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
