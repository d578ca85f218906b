#include "probe_layout.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>

namespace uinfo_fast {

c10::ScalarType compute_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

// Packs the probes into tiles of ProbeLayout::kTileSlots slots, first-fit decreasing by class
// count, and fills the layout's tile fields. Fewer tiles means fewer blocks re-reading the
// features and fewer empty slots computed; FFD uses at most 11/9 of the optimal count plus one.
// The leftmost tile with room is found in a max-segment tree over tiles, so packing is
// O(K log K) (compaction repacks, and K can be tens of thousands of small probes). Tiles not
// yet opened count as empty, so the leftmost fit is either an open tile or the next new one.
void pack_tiles(ProbeLayout& layout, c10::Device device) {
  constexpr int64_t kSlots = ProbeLayout::kTileSlots;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  const int64_t n_probes = layout.n_probes;
  const auto& off = layout.offsets_host;
  const auto& lcol = layout.label_col_host;
  if (n_probes == 0 || layout.n_cols >= kInt32Max) return;
  for (int64_t k = 0; k < n_probes; ++k) {
    const int64_t n_classes = off[k + 1] - off[k];
    if (n_classes < 1 || n_classes > kSlots || lcol[k] < 0 || lcol[k] >= kInt32Max) return;
  }
  std::vector<int64_t> order(n_probes);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return off[a + 1] - off[a] > off[b + 1] - off[b];
  });
  int64_t leaves = 1;
  while (leaves < n_probes) leaves <<= 1;
  std::vector<int64_t> room(2 * leaves, kSlots);  // max free slots in each subtree
  std::vector<int64_t> tile_of(n_probes);
  int64_t n_tiles = 0;
  for (int64_t k : order) {
    const int64_t need = off[k + 1] - off[k];
    int64_t node = 1;
    while (node < leaves) node = room[2 * node] >= need ? 2 * node : 2 * node + 1;
    const int64_t tile = node - leaves;
    tile_of[k] = tile;
    n_tiles = std::max(n_tiles, tile + 1);
    room[node] -= need;
    for (node >>= 1; node >= 1; node >>= 1) room[node] = std::max(room[2 * node], room[2 * node + 1]);
  }
  // Within a tile, probes in column order: neighbouring slots then mostly hold neighbouring
  // columns, so the kernel's weight loads coalesce and its gradient atomics can go 4 wide.
  std::vector<int64_t> by_tile(n_probes);
  std::iota(by_tile.begin(), by_tile.end(), int64_t(0));
  std::stable_sort(by_tile.begin(), by_tile.end(), [&](int64_t a, int64_t b) { return tile_of[a] < tile_of[b]; });

  // One int32 buffer, one host-to-device copy: [T*kSlots cols | T+1 starts | K*4 probe records].
  const int64_t cols_len = n_tiles * kSlots, start_len = n_tiles + 1;
  std::vector<int32_t> meta(cols_len + start_len + 4 * n_probes, -1);
  int32_t* cols = meta.data();
  int32_t* start = cols + cols_len;
  int32_t* rec = start + start_len;
  std::vector<int64_t> used(n_tiles, 0);
  for (int64_t t = 0; t <= n_tiles; ++t) start[t] = 0;
  for (int64_t i = 0; i < n_probes; ++i) {
    const int64_t k = by_tile[i], t = tile_of[k], n_classes = off[k + 1] - off[k];
    const int64_t first = used[t];
    used[t] += n_classes;
    for (int64_t c = 0; c < n_classes; ++c) cols[t * kSlots + first + c] = static_cast<int32_t>(off[k] + c);
    start[t + 1] = static_cast<int32_t>(i + 1);
    rec[4 * i + 0] = static_cast<int32_t>(first);
    rec[4 * i + 1] = static_cast<int32_t>(n_classes);
    rec[4 * i + 2] = static_cast<int32_t>(k);
    rec[4 * i + 3] = static_cast<int32_t>(lcol[k]);
  }
  // A tile opens only for a probe, so the loop above wrote every start[t + 1].
  const at::Tensor all = at::tensor(at::ArrayRef<int32_t>(meta), at::TensorOptions().dtype(at::kInt)).to(device);
  layout.tile_cols = all.narrow(0, 0, cols_len).view({n_tiles, kSlots});
  layout.tile_probe_start = all.narrow(0, cols_len, start_len);
  layout.tile_probes = all.narrow(0, cols_len + start_len, 4 * n_probes).view({n_probes, 4});
  layout.n_tiles = n_tiles;
  layout.fits_tiles = true;
}

}  // namespace

ProbeLayout make_layout(std::vector<int64_t> offsets_host, std::vector<int64_t> label_col_host, c10::Device device) {
  ProbeLayout layout;
  layout.n_probes = static_cast<int64_t>(label_col_host.size());
  layout.n_cols = offsets_host.back();
  std::vector<int64_t> col2probe(layout.n_cols);
  for (int64_t k = 0; k < layout.n_probes; ++k)
    for (int64_t c = offsets_host[k]; c < offsets_host[k + 1]; ++c) col2probe[c] = k;
  auto on_device = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
  };
  layout.offsets = on_device(offsets_host);
  layout.label_col = on_device(label_col_host);
  layout.col2probe = on_device(col2probe);
  layout.offsets_host = std::move(offsets_host);
  layout.label_col_host = std::move(label_col_host);
  if (device.is_cuda()) pack_tiles(layout, device);  // only the CUDA pass uses tiles
  return layout;
}

ProbeLayout ProbeLayout::select(const std::vector<int64_t>& keep) const {
  std::vector<int64_t> off{0}, cols;
  for (int64_t k : keep) {
    off.push_back(off.back() + offsets_host[k + 1] - offsets_host[k]);
    cols.push_back(label_col_host[k]);
  }
  return make_layout(std::move(off), std::move(cols), offsets.device());
}

at::Tensor ProbeLayout::columns_of(const std::vector<int64_t>& keep) const {
  std::vector<int64_t> idx;
  for (int64_t k : keep)
    for (int64_t c = offsets_host[k]; c < offsets_host[k + 1]; ++c) idx.push_back(c);
  return at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(offsets.device());
}

at::Tensor segment_sum(const at::Tensor& per_column, const ProbeLayout& layout) {
  return at::zeros({layout.n_probes}, per_column.options()).index_add_(0, layout.col2probe, per_column);
}

// Column sums run in the compute dtype (ATen's cascade summation keeps float32 accurate over
// D+1 terms) and only the [C] or [m, C] results are widened: a float64 sum would first copy the
// whole product to float64.
at::Tensor seg_dot(const at::Tensor& a, const at::Tensor& b, const ProbeLayout& layout) {
  return segment_sum((a * b).sum(0).to(at::kDouble), layout);
}

at::Tensor seg_dots(const at::Tensor& a, const at::Tensor& v, const ProbeLayout& layout) {
  const at::Tensor per_col = (a * v).sum(1).to(at::kDouble);  // [m, C]
  return at::zeros({a.size(0), layout.n_probes}, per_col.options()).index_add_(1, layout.col2probe, per_col);
}

at::Tensor seg_absmax(const at::Tensor& a, const ProbeLayout& layout) {
  const at::Tensor col_max = a.abs().amax(0).to(at::kDouble);
  return at::zeros({layout.n_probes}, col_max.options()).scatter_reduce_(0, layout.col2probe, col_max, "amax");
}

at::Tensor per_col(const at::Tensor& v, const ProbeLayout& layout, c10::ScalarType dt) {
  return v.index_select(0, layout.col2probe).to(dt);
}

namespace {

std::vector<int64_t> to_host(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.device() == x.device(), "uinfo_fast: ", name, " is on ", t.device(),
                    " but x is on ", x.device(), "; every tensor of a probe op must be on one device");
}

// Every probe's labels lie in [0, its class count): per label column, the smallest and largest
// label in one reduction and one host copy.
void check_label_range(const at::Tensor& labels, const std::vector<int64_t>& off, const std::vector<int64_t>& cols) {
  const at::Tensor lo = std::get<0>(labels.min(0)).to(at::kCPU), hi = std::get<0>(labels.max(0)).to(at::kCPU);
  for (size_t k = 0; k < cols.size(); ++k) {
    const int64_t n_classes = off[k + 1] - off[k];
    const int64_t ymin = lo[cols[k]].item<int64_t>(), ymax = hi[cols[k]].item<int64_t>();
    TORCH_CHECK_VALUE(ymin >= 0 && ymax < n_classes, "uinfo_fast: labels[:, ", cols[k], "] must lie in [0, ",
                      n_classes, ") for probe ", k, ", found values in [", ymin, ", ", ymax, "]");
  }
}

}  // namespace

ProbeLayout check_probe_args(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& weight,
                             const at::Tensor& bias, const at::Tensor& probe_offsets,
                             const at::Tensor& probe_label_col, const at::Tensor& l2, bool check_values) {
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "uinfo_fast: x must be a floating tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2, "uinfo_fast: x must be 2-D [N, D], got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(0) > 0 && x.size(1) > 0, "uinfo_fast: x is empty, shape ", x.sizes());
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "uinfo_fast: labels must be int64, got ",
                   labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == x.size(0),
                    "uinfo_fast: labels must be [N, L] with N = x.size(0) = ", x.size(0), ", got shape ",
                    labels.sizes());
  // The parameters' dtype is the arithmetic's: the features' own compute dtype, or float64 for
  // any features (their rows are widened a chunk at a time).
  const auto cdt = compute_dtype(x), wdt = weight.scalar_type();
  TORCH_CHECK_TYPE((wdt == cdt || wdt == at::kDouble) && bias.scalar_type() == wdt,
                   "uinfo_fast: weight and bias must be ", cdt, " (or Double) for x of dtype ", x.scalar_type(),
                   ", and of one dtype; got ", wdt, " and ", bias.scalar_type());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == x.size(1),
                    "uinfo_fast: weight must be [D, C] with D = x.size(1) = ", x.size(1), ", got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == weight.size(1),
                    "uinfo_fast: bias must be [C] with C = weight.size(1) = ", weight.size(1), ", got shape ",
                    bias.sizes());
  TORCH_CHECK_TYPE(probe_offsets.scalar_type() == at::kLong && probe_label_col.scalar_type() == at::kLong,
                   "uinfo_fast: probe_offsets and probe_label_col must be int64");
  TORCH_CHECK_VALUE(probe_label_col.dim() == 1 && probe_label_col.size(0) > 0,
                    "uinfo_fast: probe_label_col must be [K] with K >= 1, got shape ", probe_label_col.sizes());
  const int64_t n_probes = probe_label_col.size(0);
  TORCH_CHECK_VALUE(probe_offsets.dim() == 1 && probe_offsets.size(0) == n_probes + 1,
                    "uinfo_fast: probe_offsets must be [K+1] = [", n_probes + 1, "], got shape ",
                    probe_offsets.sizes());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{labels, "labels"}, {weight, "weight"},
                                {bias, "bias"}, {probe_offsets, "probe_offsets"},
                                {probe_label_col, "probe_label_col"}})
    check_same_device(t, name, x);
  if (l2.defined()) {
    check_same_device(l2, "l2", x);
    TORCH_CHECK_TYPE(at::isFloatingType(l2.scalar_type()), "uinfo_fast: l2 must be floating, got ", l2.scalar_type());
    TORCH_CHECK_VALUE(l2.dim() == 1 && l2.size(0) == n_probes, "uinfo_fast: l2 must be [K] = [", n_probes,
                      "], got shape ", l2.sizes());
    TORCH_CHECK_VALUE(l2.ge(0).all().item<bool>() && l2.isfinite().all().item<bool>(),
                      "uinfo_fast: l2 penalties must be finite and >= 0");
  }

  std::vector<int64_t> off = to_host(probe_offsets), cols = to_host(probe_label_col);
  TORCH_CHECK_VALUE(off[0] == 0 && off[n_probes] == weight.size(1),
                    "uinfo_fast: probe_offsets must start at 0 and end at C = ", weight.size(1));
  const int64_t n_label_cols = labels.size(1);
  for (int64_t k = 0; k < n_probes; ++k) {
    const int64_t n_classes = off[k + 1] - off[k];
    TORCH_CHECK_VALUE(n_classes >= 2, "uinfo_fast: probe ", k, " has ", n_classes,
                      " classes (probe_offsets must grow by at least 2 per probe)");
    TORCH_CHECK_VALUE(cols[k] >= 0 && cols[k] < n_label_cols, "uinfo_fast: probe_label_col[", k, "] = ", cols[k],
                      " is outside [0, ", n_label_cols, ")");
  }
  if (check_values) check_label_range(labels, off, cols);
  if (check_values) TORCH_CHECK_VALUE(all_finite(x), "uinfo_fast: x contains NaN or Inf");
  return make_layout(std::move(off), std::move(cols), x.device());
}

bool all_finite(const at::Tensor& x) {
  constexpr int64_t kChunkElements = int64_t(1) << 22;
  const int64_t rows = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, x.size(1)));
  for (int64_t r0 = 0; r0 < x.size(0); r0 += rows)
    if (!x.narrow(0, r0, std::min(rows, x.size(0) - r0)).isfinite().all().item<bool>()) return false;
  return true;
}

}  // namespace uinfo_fast
