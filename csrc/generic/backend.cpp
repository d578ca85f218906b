#include "backend.h"

#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <array>

namespace uinfo_fast {
namespace {

// A function-local static: the devices' registering initializers run in an unspecified order
// relative to this file's own.
std::array<Backend, static_cast<size_t>(c10::COMPILE_TIME_MAX_DEVICE_TYPES)>& registry() {
  static std::array<Backend, static_cast<size_t>(c10::COMPILE_TIME_MAX_DEVICE_TYPES)> table;
  return table;
}

}  // namespace

bool register_backend(c10::DeviceType type, const Backend& backend) {
  TORCH_INTERNAL_ASSERT(backend.softmax_xent != nullptr && backend.lbfgs_update != nullptr,
                        "uinfo_fast: a backend needs softmax_xent and lbfgs_update");
  Backend& slot = registry().at(static_cast<size_t>(type));
  TORCH_INTERNAL_ASSERT(slot.softmax_xent == nullptr, "uinfo_fast: two backends registered for ", type);
  slot = backend;
  return true;
}

const Backend& backend_for(c10::Device device) {
  const auto index = static_cast<size_t>(device.type());
  const bool known = index < registry().size() && registry()[index].softmax_xent != nullptr;
  TORCH_CHECK(known || !device.is_cuda(),
              "uinfo_fast was built without its CUDA kernels, but a CUDA tensor was passed. Rebuild on a machine "
              "with nvcc and a CUDA-enabled torch: UINFO_FAST_CUDA=1 pip install --no-build-isolation -e .");
  TORCH_CHECK(known, "uinfo_fast runs on CPU and CUDA tensors, got a tensor on ", device);
  return registry()[index];
}

}  // namespace uinfo_fast
