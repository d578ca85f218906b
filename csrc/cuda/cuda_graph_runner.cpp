// A CUDA graph of one block of fused iterations (the ones between two host checks), behind the
// generic IterationBlockRunner (generic/backend.h). An iteration is some 50 small launches around
// the pass; issued one by one from the host, their launch and dispatch cost matters when passes
// are short, while a replayed graph issues them all at once. A graph bakes in every tensor
// address and kernel argument, so it is valid only for the running set it was captured with
// (compaction makes new tensors) and for the same starting history slot; the fused update
// changes the state in place, which is what makes an iteration capturable at all.
//
// Off by default (UINFO_FAST_CUDA_GRAPHS=1 turns it on): on the full-size benchmark the passes
// already keep the GPU busy and every compaction costs a new capture; bench/RESULTS.md has the
// measurements.
#include <ATen/cuda/CUDAGraph.h>  // not CUDAContext.h/CUDAEvent.h: they need the cuSPARSE headers
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>

#include "cuda_kernels.h"

namespace uinfo_fast {
namespace {

class CudaGraphRunner final : public IterationBlockRunner {
 public:
  bool matches(int64_t version, int64_t newest) const override {
    return graph_ != nullptr && version_ == version && newest_ == newest;
  }

  void capture(int64_t version, int64_t newest, const std::function<void()>& body) override {
    graph_.reset();
    graph_ = std::make_unique<at::cuda::CUDAGraph>();
    // Capture needs a side stream; it runs nothing, so only ordering with the main stream matters.
    const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream();
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    order(main, side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      graph_->capture_begin();
      body();
      graph_->capture_end();
    }
    order(side, main);
    version_ = version;
    newest_ = newest;
  }

  void replay() override { graph_->replay(); }  // on the current stream

 private:
  static void order(const c10::cuda::CUDAStream& before, const c10::cuda::CUDAStream& after) {
    cudaEvent_t event;
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    C10_CUDA_CHECK(cudaEventRecord(event, before.stream()));
    C10_CUDA_CHECK(cudaStreamWaitEvent(after.stream(), event, 0));
    C10_CUDA_CHECK(cudaEventDestroy(event));
  }

  std::unique_ptr<at::cuda::CUDAGraph> graph_;
  int64_t version_ = -1, newest_ = -1;
};

}  // namespace

std::unique_ptr<IterationBlockRunner> make_cuda_graph_runner() { return std::make_unique<CudaGraphRunner>(); }

}  // namespace uinfo_fast
