#include "softmax_xent.h"

#include <c10/util/Exception.h>

namespace uinfo_fast {

void check_softmax_xent_args(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& probe_offsets,
                             const at::Tensor& probe_label_col) {
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                   "uinfo_fast: logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.is_contiguous(),
                    "uinfo_fast: logits must be a contiguous 2-D [B, C] tensor, got shape ", logits.sizes());
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong && probe_offsets.scalar_type() == at::kLong &&
                       probe_label_col.scalar_type() == at::kLong,
                   "uinfo_fast: labels, probe_offsets and probe_label_col must be int64");
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == logits.size(0),
                    "uinfo_fast: labels must be [B, L] with B = logits.size(0) = ", logits.size(0), ", got shape ",
                    labels.sizes());
  TORCH_CHECK_VALUE(probe_label_col.dim() == 1 && probe_offsets.dim() == 1 &&
                        probe_offsets.size(0) == probe_label_col.size(0) + 1,
                    "uinfo_fast: probe_offsets must be [K+1] and probe_label_col [K], got shapes ",
                    probe_offsets.sizes(), " and ", probe_label_col.sizes());
  for (const at::Tensor* t : {&labels, &probe_offsets, &probe_label_col})
    TORCH_CHECK_VALUE(t->device() == logits.device(), "uinfo_fast: all softmax_xent_ arguments must be on ",
                      logits.device(), ", found one on ", t->device());
}

}  // namespace uinfo_fast
