// The arithmetic of the fused ∇τ loss, written once for the CPU and the CUDA kernels
// (the pattern of torchvision's box_iou_rotated_utils.h): everything here is a pure function of a few
// per-row scalars, so both backends agree bit for bit on the formulas and differ only in how they loop.
//
// Notation for one row x[0..C) with label y:
//   m        = max_k x_k                        (subtracted before exp, so logits up to ±1e4 are safe)
//   e_k      = exp(x_k - m)
//   rest     = Σ_{k≠y} e_k,  rest_sq = Σ_{k≠y} e_k²,  label_exp = e_y,  total = rest + label_exp
//   loss     = logsumexp(x) - x_y
//   p - 1_y  = e_k / total for k≠y and -rest / total at y (no cancellation of p_y - 1 when p_y ≈ 1)
#pragma once

#include <math.h>

#ifdef __CUDACC__
#define AUDITKIT_HD __host__ __device__ __forceinline__
#else
#define AUDITKIT_HD inline
#endif

namespace auditkit {

// Accumulation type: float32 for float/half/bfloat16 inputs, float64 for float64.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type_t = typename AccType<scalar_t>::type;

AUDITKIT_HD float exp_of(float x) { return expf(x); }
AUDITKIT_HD double exp_of(double x) { return exp(x); }
AUDITKIT_HD float log_of(float x) { return logf(x); }
AUDITKIT_HD double log_of(double x) { return log(x); }
AUDITKIT_HD float log1p_of(float x) { return log1pf(x); }
AUDITKIT_HD double log1p_of(double x) { return log1p(x); }
AUDITKIT_HD float sqrt_of(float x) { return sqrtf(x); }
AUDITKIT_HD double sqrt_of(double x) { return sqrt(x); }

// max that returns NaN when either side is NaN, so one reduction also detects NaN logits.
template <typename T>
AUDITKIT_HD T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <typename T>
AUDITKIT_HD T nan_min(T a, T b) {
  return (a < b || a != a) ? a : b;
}

// A row is usable when its max and min are finite (this rejects NaN, +inf and -inf anywhere in it).
template <typename T>
AUDITKIT_HD bool row_is_finite(T row_max, T row_min) {
  return isfinite(row_max) && isfinite(row_min);
}

template <typename acc_t>
struct RowStats {
  acc_t max;        // m
  acc_t rest;       // Σ_{k≠y} exp(x_k - m)
  acc_t rest_sq;    // Σ_{k≠y} exp(x_k - m)²
  acc_t label_exp;  // exp(x_y - m)
  acc_t label_shifted;  // x_y - m
};

// Cross-entropy of one row. When the label holds most of the mass, log1p(rest / e_y) keeps the
// digits that log(total) - (x_y - m) would lose for a confidently right prediction.
template <typename acc_t>
AUDITKIT_HD acc_t row_cross_entropy(const RowStats<acc_t>& s) {
  if (s.label_exp >= s.rest) {
    return log1p_of(s.rest / s.label_exp);
  }
  return log_of(s.rest + s.label_exp) - s.label_shifted;
}

// ‖softmax(x) - onehot(y)‖₂ = sqrt(Σ_{k≠y} p_k² + (1 - p_y)²) with 1 - p_y = rest / total.
template <typename acc_t>
AUDITKIT_HD acc_t row_grad_norm(const RowStats<acc_t>& s) {
  const acc_t total = s.rest + s.label_exp;
  return sqrt_of(s.rest_sq + s.rest * s.rest) / total;
}

// p_y - 1 for the row's label entry.
template <typename acc_t>
AUDITKIT_HD acc_t row_label_gradient(const RowStats<acc_t>& s) {
  return -s.rest / (s.rest + s.label_exp);
}

template <typename acc_t>
AUDITKIT_HD acc_t relu_of(acc_t v) {
  return v > acc_t(0) ? v : acc_t(0);
}

// d/dℓ of ReLU(τ - ℓ)²: the factor that scales a forget row's (p - onehot). In the batch form ℓ is the
// forget batch's mean loss and the factor is shared by all rows; in the per-sample form it is ℓ_i.
template <typename acc_t>
AUDITKIT_HD acc_t forget_slope(acc_t tau, acc_t loss) {
  return acc_t(-2) * relu_of(tau - loss);
}

template <typename acc_t>
AUDITKIT_HD acc_t forget_penalty(acc_t tau, acc_t loss) {
  const acc_t gap = relu_of(tau - loss);
  return gap * gap;
}

}  // namespace auditkit
