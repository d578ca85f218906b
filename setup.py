"""Build script for the uinfo_fast._C extension.

Environment switches:
  UINFO_FAST_CUDA=auto (default)  build the CUDA kernels when nvcc and a CUDA-enabled torch are present
  UINFO_FAST_CUDA=0               CPU kernels only (quick iterations)
  UINFO_FAST_CUDA=1               require the CUDA kernels; fail if they cannot be built
  TORCH_CUDA_ARCH_LIST            honoured; when unset and no GPU is visible it defaults to "8.0;9.0+PTX"
  CUDA_HOME                       defaults to /usr/local/cuda when that exists
  MAX_JOBS                        parallel compile jobs (ninja)
  UINFO_FAST_PTXAS_VERBOSE=1      print each CUDA kernel's registers, shared memory and spills
"""
import glob
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda"):
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _want_cuda() -> bool:
    mode = os.environ.get("UINFO_FAST_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"UINFO_FAST_CUDA must be 'auto', '0' or '1', got {mode!r}")
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if mode == "1" and not available:
        raise SystemExit(
            "UINFO_FAST_CUDA=1 but the CUDA kernels cannot be built: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cpp_extension.CUDA_HOME!r}"
        )
    return available and mode != "0"


def _sources(*patterns):
    return sorted(path for pattern in patterns for path in glob.glob(os.path.join("csrc", pattern)))


def _extension():
    with_cuda = _want_cuda()
    # csrc/ops.cpp holds the schemas, csrc/generic the device-generic ATen code, csrc/cpu and
    # csrc/cuda each device's kernels and registrations: a CPU-only build leaves csrc/cuda out.
    sources = _sources("*.cpp", "generic/*.cpp", "cpu/*.cpp")
    cxx_flags = ["-O3"]  # the C++ standard comes from torch (C++20 from torch 2.10 on)
    link_flags = []
    if "OpenMP" in torch.__config__.parallel_info():
        # ATen's parallel_for is a header template: without -fopenmp it runs on one thread.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if with_cuda:
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            # No GPU to query: build Ampere and Hopper machine code plus PTX for newer chips.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        sources += _sources("cuda/*.cu", "cuda/*.cpp")
        nvcc_flags = ["-O3"]
        if os.environ.get("UINFO_FAST_PTXAS_VERBOSE") == "1":  # registers, shared memory, spills per kernel
            nvcc_flags.append("-Xptxas=-v")
        print(f"uinfo_fast: building CPU and CUDA kernels (TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')})")
        return cpp_extension.CUDAExtension(
            "uinfo_fast._C",
            sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
        )
    print("uinfo_fast: building CPU kernels only")
    return cpp_extension.CppExtension("uinfo_fast._C", sources, extra_compile_args={"cxx": cxx_flags},
                                      extra_link_args=link_flags)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
