"""Build the fdbert_native extension modules.

Every ``fdbert_native/_*.pyx`` becomes one extension module. A .pyx names the C files it wraps
with a ``# distutils: sources = ...`` line at its top, so adding a kernel family never touches
this file. Compiler flags are project-wide and deliberately portable: no ``-march=native``;
SIMD code lives in C functions with ``__attribute__((target(...)))`` and is chosen at run time
from the CPU features (see fdbert_native/csrc/cpu_features.c).
"""

import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

OPENMP = os.environ.get("FDBERT_NO_OPENMP", "") == ""

compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing",
                # numpy's float32 ops never fuse multiply-add; neither may our epilogues,
                # or float results would drift from the reference by an ulp.
                "-ffp-contract=off"]
link_args = []
if OPENMP and sys.platform.startswith("linux"):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

extensions = [
    Extension(
        name="fdbert_native." + os.path.splitext(os.path.basename(pyx))[0],
        sources=[pyx],
        include_dirs=[np.get_include(), "fdbert_native/csrc"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted(glob.glob("fdbert_native/_*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
