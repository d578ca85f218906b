// Probes that share one feature matrix, laid side by side as columns of one parameter matrix.
//
// Probe k owns columns [offsets[k], offsets[k+1]) of weight [D, C] and bias [C] and predicts
// label column label_col[k] of labels [N, L]. One matrix product then serves every probe.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace uinfo_fast {

struct ProbeLayout {
  int64_t n_probes = 0;
  int64_t n_cols = 0;
  std::vector<int64_t> offsets_host;    // [K+1]
  std::vector<int64_t> label_col_host;  // [K]
  at::Tensor offsets;                   // [K+1] int64, on the features' device
  at::Tensor label_col;                 // [K] int64, on the features' device
  at::Tensor col2probe;                 // [C] int64, probe index of every column

  // Column tiles of the fused CUDA pass (cuda/fused_pass_cuda.cu). A tile is kTileSlots column
  // slots holding whole probes, so a block does a probe's softmax without leaving the block;
  // probes are packed first-fit decreasing by class count. Built here, once per layout (at
  // construction and at each compaction) for CUDA layouts, so a pass copies nothing from the
  // host. Defined only when fits_tiles: a CUDA layout whose probes all have 1..kTileSlots classes
  // (and whose indices fit in int32).
  static constexpr int64_t kTileSlots = 128;
  bool fits_tiles = false;
  int64_t n_tiles = 0;
  at::Tensor tile_cols;         // [T, kTileSlots] int32: column of params in each slot, -1 if empty
  at::Tensor tile_probe_start;  // [T+1] int32: tile t holds rows [start[t], start[t+1]) of tile_probes
  at::Tensor tile_probes;       // [K, 4] int32: (first slot, n_classes, probe k, label column), by tile

  // Layout of the probes listed in `keep` (indices into this layout), columns renumbered.
  ProbeLayout select(const std::vector<int64_t>& keep) const;
  // Original column indices of the probes in `keep`, as an int64 tensor on `device`.
  at::Tensor columns_of(const std::vector<int64_t>& keep) const;
};

ProbeLayout make_layout(std::vector<int64_t> offsets_host, std::vector<int64_t> label_col_host, c10::Device device);

// Validates the arguments every probe op takes and returns their layout. Raises ValueError /
// TypeError naming the argument. `l2` may be undefined (ops without a penalty). Shapes, dtypes,
// devices and the layout are always checked; with `check_values` also the label range and finite
// x, which take passes over the data: callers that validated those once (the Python API) skip
// them, and the kernels then trust that labels lie in range.
ProbeLayout check_probe_args(const at::Tensor& x,              // [N, D] float32/bfloat16/float16/float64
                             const at::Tensor& labels,         // [N, L] int64
                             const at::Tensor& weight,         // [D, C] compute_dtype(x) or float64
                             const at::Tensor& bias,           // [C]
                             const at::Tensor& probe_offsets,  // [K+1] int64
                             const at::Tensor& probe_label_col,// [K] int64
                             const at::Tensor& l2,             // [K] or undefined
                             bool check_values);

// Whether every element of x is finite, checked in row chunks so that the boolean temporaries
// stay small next to the features.
bool all_finite(const at::Tensor& x);

// The features' own compute dtype: float64 for float64 features, float32 for the other floating
// types. An op computes in its parameters' dtype, which is this or float64.
c10::ScalarType compute_dtype(const at::Tensor& x);

// Per-probe sums of a per-column quantity: out[k] = sum of v[c] over the columns of probe k.
at::Tensor segment_sum(const at::Tensor& per_column, const ProbeLayout& layout);

// <a_k, b_k> per probe for [R, C] matrices a and b: [K] float64.
at::Tensor seg_dot(const at::Tensor& a, const at::Tensor& b, const ProbeLayout& layout);
// <a_i, v> per probe for every slot i of a history a [m, R, C]: [m, K] float64.
at::Tensor seg_dots(const at::Tensor& a, const at::Tensor& v, const ProbeLayout& layout);
// max |a| over each probe's columns of an [R, C] matrix: [K] float64.
at::Tensor seg_absmax(const at::Tensor& a, const ProbeLayout& layout);
// Per-probe values [K] spread over that probe's columns, [C], in dtype `dt`.
at::Tensor per_col(const at::Tensor& v, const ProbeLayout& layout, c10::ScalarType dt);

}  // namespace uinfo_fast
