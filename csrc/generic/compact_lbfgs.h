// The small per-probe solve of the compact L-BFGS direction, shared by the fused CPU and CUDA
// updates (host and device code alike).
#pragma once

#if defined(__CUDACC__)
#define UINFO_FAST_HOST_DEVICE __host__ __device__
#else
#define UINFO_FAST_HOST_DEVICE
#endif

namespace uinfo_fast {

// Coefficients of d = -(gamma P g + S p - gamma (P Y) u) over `count` history pairs in
// chronological order (Byrd, Nocedal & Schnabel 1994): u = R^-1 a and
// p = R^-T ((D + gamma Y^T P Y) u - gamma b), with a = S^T g, b = (P Y)^T g, R the upper triangle
// of S^T Y and D its diagonal. sy(i, j) = <s_i, y_j> and ypy(i, j) = <y_i, P y_j> take
// chronological indices. A skipped pair is all zeros; a unit diagonal decouples it (its
// coefficients multiply zero vectors).
template <typename SY, typename YPY>
UINFO_FAST_HOST_DEVICE inline void compact_coefficients(int count, const double* a, const double* b, SY sy, YPY ypy,
                                                        double gamma, double* u, double* p) {
  auto r_at = [&](int i, int j) {
    const double v = sy(i, j);
    return (i == j && v <= 0.0) ? v + 1.0 : v;
  };
  for (int i = count - 1; i >= 0; --i) {
    double acc = a[i];
    for (int j = i + 1; j < count; ++j) acc -= r_at(i, j) * u[j];
    u[i] = acc / r_at(i, i);
  }
  for (int i = 0; i < count; ++i) {
    double w = sy(i, i) * u[i] - gamma * b[i];
    for (int j = 0; j < count; ++j) w += gamma * ypy(i, j) * u[j];
    for (int j = 0; j < i; ++j) w -= r_at(j, i) * p[j];
    p[i] = w / r_at(i, i);
  }
}

}  // namespace uinfo_fast
