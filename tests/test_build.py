import os

import pytest

from uinfo_fast.engine import cuda_kernels_built


@pytest.mark.skipif(os.environ.get("UINFO_FAST_CUDA") != "1", reason="only when the build was asked to include CUDA")
def test_cuda_kernels_were_built_when_required():
    # CI builds with UINFO_FAST_CUDA=1: the CUDA kernels must be registered with the dispatcher.
    assert cuda_kernels_built()
