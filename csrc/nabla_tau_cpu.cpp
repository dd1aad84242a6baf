// CPU kernel of auditkit::nabla_tau_loss: rows in parallel (at::parallel_for), each row read from
// memory once and kept in L1 for three short passes (max/min, Σexp, write the gradient row), with
// at::vec vectors and a vectorised exp for float32/float64. float16/bfloat16 take the scalar path and
// accumulate in float32. The build compiles this file for the host's widest vector ISA (see
// auditkit/ops.py), which is what makes at::vec use AVX2/AVX-512 here.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "nabla_tau.h"
#include "nabla_tau_checks.h"

namespace auditkit {
namespace {

using at::Tensor;
using at::vec::Vectorized;

template <typename scalar_t>
constexpr bool kHasVectorPath = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>;

// Gradient outputs come from a small cache of buffers that autograd has released: page-faulting a
// fresh [B, C] output on every call cost up to 3× the kernel at large sizes, and a training loop asks
// for the same sizes every step. Each buffer is still a fresh tensor for its caller (the kernel
// overwrites every element), so the op stays functional.
class GradBufferPool {
 public:
  static GradBufferPool& instance() {
    static auto* pool = new GradBufferPool();  // never destroyed: deleters may run at interpreter exit
    return *pool;
  }

  Tensor empty_like(const Tensor& like) {
    const size_t nbytes = static_cast<size_t>(like.numel()) * like.element_size();
    if (nbytes < kMinBytes) return at::empty_like(like);  // malloc already reuses small blocks
    void* data = take(nbytes);
    if (data == nullptr) data = c10::alloc_cpu(nbytes);
    return at::from_blob(data, like.sizes(), [this, nbytes](void* ptr) { give_back(ptr, nbytes); },
                         like.options());
  }

 private:
  static constexpr size_t kMinBytes = size_t(1) << 20;
  static constexpr size_t kMaxCachedBytes = size_t(1) << 30;
  static constexpr size_t kMaxCachedBuffers = 8;

  struct Entry {
    void* data;
    size_t nbytes;
  };

  void* take(size_t nbytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < cached_.size(); ++i) {
      if (cached_[i].nbytes == nbytes) {
        void* data = cached_[i].data;
        cached_[i] = cached_.back();
        cached_.pop_back();
        cached_bytes_ -= nbytes;
        return data;
      }
    }
    return nullptr;
  }

  void give_back(void* data, size_t nbytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_.size() < kMaxCachedBuffers && cached_bytes_ + nbytes <= kMaxCachedBytes) {
        cached_.push_back({data, nbytes});
        cached_bytes_ += nbytes;
        return;
      }
    }
    c10::free_cpu(data);
  }

  std::mutex mutex_;
  std::vector<Entry> cached_;
  size_t cached_bytes_ = 0;
};

// Rows per task: enough elements per task that thread hand-off stays negligible.
int64_t grain_rows(int64_t num_classes) { return std::max<int64_t>(1, 32768 / num_classes); }

struct RowContext {
  const char* logits_name;
  const char* labels_name;
  int64_t num_classes;
};

int64_t checked_label(const int64_t* labels, int64_t row, const RowContext& ctx) {
  const int64_t label = labels[row];
  TORCH_CHECK(label >= 0 && label < ctx.num_classes, ctx.labels_name, "[", row, "] = ", label,
              " is out of range for ", ctx.num_classes, " classes");
  return label;
}

// Vectorised exp: ATen's exp_u20 (a degree-5 polynomial, ≤ 20 ulp, inlined) for float; double maps
// it to Sleef's 1-ulp exp. exp(-inf) = 0, which the padding below relies on.
template <typename Vec>
Vec fast_exp(const Vec& v) {
  return v.exp_u20();
}

// The vector starting at x[k], with lanes past the row's end set to `pad`: the last, partial vector
// of a row (or the only one when C < 16) stays vectorised instead of falling back to libm calls.
template <typename Vec, typename scalar_t>
Vec load_padded(const scalar_t* x, int64_t k, int64_t C, scalar_t pad) {
  constexpr int64_t V = Vec::size();
  return k + V <= C ? Vec::loadu(x + k) : Vec::set(Vec(pad), Vec::loadu(x + k, C - k), C - k);
}

template <typename Vec, typename scalar_t>
void store_partial(const Vec& v, scalar_t* out, int64_t k, int64_t C) {
  constexpr int64_t V = Vec::size();
  if (k + V <= C) {
    v.store(out + k);
  } else {
    v.store(out + k, C - k);
  }
}

// Passes 1 and 2 over one row: max/min (with the finiteness check), then Σ and Σ² of exp(x - m) over
// every class except the label, whose lane is set to -inf so that `rest` never needs a cancelling
// subtraction (and no libm call sits in the loop to push the accumulators out of registers). With
// `exps` the exp(x - m) row is also stored there, so the gradient pass only rescales it in L1.
template <typename scalar_t>
RowStats<acc_type_t<scalar_t>> row_stats(const scalar_t* x, int64_t label, int64_t row,
                                         const RowContext& ctx, scalar_t* exps) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t C = ctx.num_classes;
  acc_t row_max;
  acc_t row_min;
  acc_t rest = 0;
  acc_t rest_sq = 0;
  if constexpr (kHasVectorPath<scalar_t>) {
    using Vec = Vectorized<scalar_t>;
    constexpr int64_t V = Vec::size();
    constexpr scalar_t inf = std::numeric_limits<scalar_t>::infinity();
    Vec vmax(-inf);
    Vec vmin(inf);
    for (int64_t k = 0; k < C; k += V) {
      vmax = at::vec::maximum(vmax, load_padded<Vec>(x, k, C, -inf));
      vmin = at::vec::minimum(vmin, load_padded<Vec>(x, k, C, inf));
    }
    row_max = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return at::vec::maximum(a, b); }, vmax);
    row_min = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return at::vec::minimum(a, b); }, vmin);
    TORCH_CHECK(row_is_finite(row_max, row_min), ctx.logits_name, "[", row, "] contains NaN or inf");
    const Vec shift(row_max);
    Vec vrest(0);
    Vec vrest_sq(0);
    const int64_t label_chunk = label - label % V;
    for (int64_t k = 0; k < C; k += V) {
      Vec v = load_padded<Vec>(x, k, C, -inf);
      if (k == label_chunk) {
        scalar_t chunk[V];
        v.store(chunk);
        chunk[label - k] = -inf;
        v = Vec::loadu(chunk);
      }
      const Vec e = fast_exp(v - shift);
      if (exps != nullptr) store_partial(e, exps, k, C);
      vrest = vrest + e;
      vrest_sq = at::vec::fmadd(e, e, vrest_sq);
    }
    rest = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return a + b; }, vrest);
    rest_sq = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return a + b; }, vrest_sq);
  } else {
    row_max = static_cast<acc_t>(x[0]);
    row_min = row_max;
    for (int64_t k = 1; k < C; ++k) {
      row_max = nan_max<acc_t>(row_max, static_cast<acc_t>(x[k]));
      row_min = nan_min<acc_t>(row_min, static_cast<acc_t>(x[k]));
    }
    TORCH_CHECK(row_is_finite(row_max, row_min), ctx.logits_name, "[", row, "] contains NaN or inf");
    for (int64_t k = 0; k < C; ++k) {
      if (k != label) {
        const acc_t e = exp_of(static_cast<acc_t>(x[k]) - row_max);
        rest += e;
        rest_sq += e * e;
      }
    }
  }
  const acc_t label_shifted = static_cast<acc_t>(x[label]) - row_max;
  return RowStats<acc_t>{row_max, rest, rest_sq, exp_of(label_shifted), label_shifted};
}

// Pass 3: out = coefficient · (softmax(x) - onehot(label)). With `from_exps` the row already holds
// exp(x - m) (stored by row_stats) and is rescaled in place; otherwise the exps are recomputed from x.
template <typename scalar_t>
void write_row_gradient(const scalar_t* x, int64_t label, const RowStats<acc_type_t<scalar_t>>& s,
                        acc_type_t<scalar_t> coefficient, int64_t C, scalar_t* out, bool from_exps) {
  using acc_t = acc_type_t<scalar_t>;
  if (coefficient == acc_t(0)) {
    // ReLU inactive or α = 0/1: the row's gradient is exactly zero, no exp needed.
    std::fill(out, out + C, scalar_t(0));
    return;
  }
  const acc_t scale = coefficient / (s.rest + s.label_exp);
  if constexpr (kHasVectorPath<scalar_t>) {
    using Vec = Vectorized<scalar_t>;
    constexpr int64_t V = Vec::size();
    const Vec shift(s.max);
    const Vec vscale(scale);
    const scalar_t pad = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t k = 0; k < C; k += V) {
      const Vec e = from_exps ? load_padded<Vec>(out, k, C, scalar_t(0))
                              : fast_exp(load_padded<Vec>(x, k, C, pad) - shift);
      store_partial(e * vscale, out, k, C);
    }
  } else {
    for (int64_t k = 0; k < C; ++k) {
      out[k] = static_cast<scalar_t>(exp_of(static_cast<acc_t>(x[k]) - s.max) * scale);
    }
  }
  out[label] = static_cast<scalar_t>(coefficient * row_label_gradient(s));
}

// Rows whose gradient coefficient is known from the row itself (retain rows; forget rows in the
// per-sample form): stats and gradient in one visit while the row is in L1. A set whose weight is 0
// (α = 1 for retain rows, as in cross_entropy_stats; α = 0 for forget rows) stores no exps.
template <typename scalar_t, typename CoefficientOf>
void fused_rows(const scalar_t* logits, const int64_t* labels, int64_t rows, const RowContext& ctx,
                bool weighted, CoefficientOf coefficient_of, acc_type_t<scalar_t>* losses,
                acc_type_t<scalar_t>* norms, scalar_t* grad) {
  const int64_t C = ctx.num_classes;
  // float16/bfloat16 exps would lose bits (or underflow) before rescaling: those recompute from x.
  const bool store_exps = weighted && kHasVectorPath<scalar_t>;
  at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t label = checked_label(labels, i, ctx);
      const auto s = row_stats(logits + i * C, label, i, ctx, store_exps ? grad + i * C : nullptr);
      losses[i] = row_cross_entropy(s);
      norms[i] = row_grad_norm(s);
      write_row_gradient(logits + i * C, label, s, coefficient_of(losses[i]), C, grad + i * C,
                         /*from_exps=*/store_exps);
    }
  });
}

// Forget rows in the batch form: the coefficient needs the batch's mean loss, so the first sweep
// stores exp(x - m) in the gradient rows and the second only rescales them (a multiply instead of an
// exp per element; float16/bfloat16 recompute, as in fused_rows).
template <typename scalar_t>
void batch_form_rows(const scalar_t* logits, const int64_t* labels, int64_t rows,
                     const RowContext& ctx, double tau, double alpha,
                     acc_type_t<scalar_t>* losses, acc_type_t<scalar_t>* norms, scalar_t* grad,
                     double* mean_loss) {
  using acc_t = acc_type_t<scalar_t>;
  const int64_t C = ctx.num_classes;
  std::vector<RowStats<acc_t>> stats(rows);
  const bool store_exps = alpha != 0.0 && kHasVectorPath<scalar_t>;
  at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      stats[i] = row_stats(logits + i * C, checked_label(labels, i, ctx), i, ctx,
                           store_exps ? grad + i * C : nullptr);
      losses[i] = row_cross_entropy(stats[i]);
      norms[i] = row_grad_norm(stats[i]);
    }
  });
  double sum = 0;
  for (int64_t i = 0; i < rows; ++i) sum += losses[i];
  *mean_loss = sum / static_cast<double>(rows);
  const auto coefficient =
      static_cast<acc_t>(alpha * forget_slope<double>(tau, *mean_loss) / static_cast<double>(rows));
  at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      write_row_gradient(logits + i * C, labels[i], stats[i], coefficient, C, grad + i * C,
                         /*from_exps=*/store_exps);
    }
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> nabla_tau_loss_cpu(
    const Tensor& forget_logits, const Tensor& forget_labels, const Tensor& retain_logits,
    const Tensor& retain_labels, double tau, double alpha, bool per_sample) {
  check_nabla_tau_inputs(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha);
  const Tensor f_logits = forget_logits.contiguous();
  const Tensor r_logits = retain_logits.contiguous();
  const Tensor f_labels = forget_labels.contiguous();
  const Tensor r_labels = retain_labels.contiguous();
  const int64_t Bf = f_logits.size(0);
  const int64_t Br = r_logits.size(0);
  const int64_t C = f_logits.size(1);
  const auto acc_dtype = f_logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc_options = f_logits.options().dtype(acc_dtype);
  Tensor loss = at::empty({}, acc_options);
  Tensor f_losses = at::empty({Bf}, acc_options);
  Tensor r_losses = at::empty({Br}, acc_options);
  Tensor f_norms = at::empty({Bf}, acc_options);
  Tensor r_norms = at::empty({Br}, acc_options);
  Tensor f_grad = GradBufferPool::instance().empty_like(f_logits);
  Tensor r_grad = GradBufferPool::instance().empty_like(r_logits);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f_logits.scalar_type(),
                                  "nabla_tau_loss_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const RowContext f_ctx{"forget_logits", "forget_labels", C};
    const RowContext r_ctx{"retain_logits", "retain_labels", C};
    auto* f_loss_ptr = f_losses.data_ptr<acc_t>();
    auto* r_loss_ptr = r_losses.data_ptr<acc_t>();
    // An empty set contributes nothing: its term of the loss is 0 (see auditkit.ops.nabla_tau_loss).
    double forget_term = 0;
    if (Bf > 0 && per_sample) {
      const auto scale = static_cast<acc_t>(alpha / static_cast<double>(Bf));
      const auto t = static_cast<acc_t>(tau);
      fused_rows(f_logits.const_data_ptr<scalar_t>(), f_labels.const_data_ptr<int64_t>(), Bf, f_ctx,
                 /*weighted=*/alpha != 0.0,
                 [=](acc_t l) { return scale * forget_slope(t, l); }, f_loss_ptr,
                 f_norms.data_ptr<acc_t>(), f_grad.data_ptr<scalar_t>());
      double penalty_sum = 0;
      for (int64_t i = 0; i < Bf; ++i) penalty_sum += forget_penalty<double>(tau, f_loss_ptr[i]);
      forget_term = alpha * penalty_sum / static_cast<double>(Bf);
    } else if (Bf > 0) {
      double mean_loss = 0;
      batch_form_rows(f_logits.const_data_ptr<scalar_t>(), f_labels.const_data_ptr<int64_t>(), Bf,
                      f_ctx, tau, alpha, f_loss_ptr, f_norms.data_ptr<acc_t>(),
                      f_grad.data_ptr<scalar_t>(), &mean_loss);
      forget_term = alpha * forget_penalty<double>(tau, mean_loss);
    }
    double retain_term = 0;
    if (Br > 0) {
      const auto coefficient = static_cast<acc_t>((1.0 - alpha) / static_cast<double>(Br));
      fused_rows(r_logits.const_data_ptr<scalar_t>(), r_labels.const_data_ptr<int64_t>(), Br, r_ctx,
                 /*weighted=*/alpha != 1.0,
                 [=](acc_t) { return coefficient; }, r_loss_ptr, r_norms.data_ptr<acc_t>(),
                 r_grad.data_ptr<scalar_t>());
      double sum = 0;
      for (int64_t i = 0; i < Br; ++i) sum += r_loss_ptr[i];
      retain_term = (1.0 - alpha) * sum / static_cast<double>(Br);
    }
    *loss.data_ptr<acc_t>() = static_cast<acc_t>(forget_term + retain_term);
  });
  return {loss, f_losses, r_losses, f_norms, r_norms, f_grad, r_grad};
}

}  // namespace
}  // namespace auditkit

TORCH_LIBRARY_IMPL(auditkit, CPU, m) { m.impl("nabla_tau_loss", &auditkit::nabla_tau_loss_cpu); }
