// CUDA kernel of auditkit::nabla_tau_loss: one warp per row, lanes striding over the classes and
// warp-shuffle reductions, on the current stream. Rows whose gradient coefficient is known from the
// row itself (retain rows, per-sample forget rows) are finished in one kernel; batch-form forget rows
// need the forget mean, so a one-block kernel reduces the losses and a second sweep writes them.
// Bad labels and non-finite rows are recorded by row index on the device and reported after the
// launches with the same messages as the CPU kernel (one small device-to-host copy).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <tuple>

#include "nabla_tau.h"
#include "nabla_tau_checks.h"

namespace auditkit {
namespace {

using at::Tensor;

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;
constexpr int kFinishThreads = 256;

enum class Coefficient : int { kConstant, kPerSample, kFromMean };

// Slots of one set's error record: the first offending row of each kind, INT_MAX when none. The
// forget set uses slots [0, 2) of the error buffer and the retain set [2, 4).
enum ErrorSlot : int { kBadLabel = 0, kNonFinite = 1, kSlots = 2 };

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_min(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = nan_min(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Per-row scalars the gradient sweep needs: the row max, 1/total and p_y - 1.
template <typename acc_t>
struct RowScale {
  acc_t max;
  acc_t inv_total;
  acc_t label_gradient;
};

template <typename scalar_t, typename acc_t>
__device__ void write_gradient_row(const scalar_t* x, int64_t label, int64_t C, const RowScale<acc_t>& r,
                                   acc_t coefficient, scalar_t* out, int lane) {
  const acc_t scale = coefficient * r.inv_total;
  for (int64_t k = lane; k < C; k += kWarp) {
    const acc_t g = k == label ? coefficient * r.label_gradient
                               : exp_of(static_cast<acc_t>(x[k]) - r.max) * scale;
    out[k] = static_cast<scalar_t>(g);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void rows_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ labels, int64_t rows,
                            int64_t C, Coefficient mode, acc_t constant, acc_t tau, acc_t per_sample_scale,
                            acc_t* __restrict__ losses, acc_t* __restrict__ norms,
                            RowScale<acc_t>* __restrict__ scales, scalar_t* __restrict__ grad,
                            int* __restrict__ errors) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const scalar_t* x = logits + row * C;
  const int64_t label = labels[row];
  if (label < 0 || label >= C) {
    if (lane == 0) atomicMin(errors + kBadLabel, static_cast<int>(row));
    return;
  }
  acc_t row_max = static_cast<acc_t>(x[0]);
  acc_t row_min = row_max;
  for (int64_t k = lane; k < C; k += kWarp) {
    const acc_t v = static_cast<acc_t>(x[k]);
    row_max = nan_max(row_max, v);
    row_min = nan_min(row_min, v);
  }
  row_max = warp_max(row_max);
  row_min = warp_min(row_min);
  if (!row_is_finite(row_max, row_min)) {
    if (lane == 0) atomicMin(errors + kNonFinite, static_cast<int>(row));
    return;
  }
  acc_t rest = 0;
  acc_t rest_sq = 0;
  for (int64_t k = lane; k < C; k += kWarp) {
    if (k != label) {
      const acc_t e = exp_of(static_cast<acc_t>(x[k]) - row_max);
      rest += e;
      rest_sq += e * e;
    }
  }
  rest = warp_sum(rest);
  rest_sq = warp_sum(rest_sq);
  const acc_t label_shifted = static_cast<acc_t>(x[label]) - row_max;
  const RowStats<acc_t> s{row_max, rest, rest_sq, exp_of(label_shifted), label_shifted};
  const acc_t loss = row_cross_entropy(s);
  const RowScale<acc_t> r{row_max, acc_t(1) / (s.rest + s.label_exp), row_label_gradient(s)};
  if (lane == 0) {
    losses[row] = loss;
    norms[row] = row_grad_norm(s);
  }
  if (mode == Coefficient::kFromMean) {
    if (lane == 0) scales[row] = r;
    return;
  }
  const acc_t coefficient = mode == Coefficient::kConstant ? constant : per_sample_scale * forget_slope(tau, loss);
  write_gradient_row(x, label, C, r, coefficient, grad + row * C, lane);
}

template <typename scalar_t, typename acc_t>
__global__ void batch_form_gradient_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ labels,
                                           int64_t rows, int64_t C, const RowScale<acc_t>* __restrict__ scales,
                                           const acc_t* __restrict__ coefficient, scalar_t* __restrict__ grad) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  write_gradient_row(logits + row * C, labels[row], C, scales[row], *coefficient, grad + row * C, lane);
}

// One block: the forget and retain terms of the loss and, for the batch form, the shared forget
// coefficient α·slope(τ, mean ℓf)/Bf. Sums in double whatever the input type.
template <typename acc_t>
__global__ void finish_kernel(const acc_t* __restrict__ f_losses, int64_t Bf, const acc_t* __restrict__ r_losses,
                              int64_t Br, double tau, double alpha, bool per_sample, acc_t* __restrict__ loss,
                              acc_t* __restrict__ forget_coefficient) {
  __shared__ double f_part[kFinishThreads];
  __shared__ double r_part[kFinishThreads];
  double f_sum = 0;
  double r_sum = 0;
  for (int64_t i = threadIdx.x; i < Bf; i += blockDim.x) {
    f_sum += per_sample ? forget_penalty<double>(tau, f_losses[i]) : static_cast<double>(f_losses[i]);
  }
  for (int64_t i = threadIdx.x; i < Br; i += blockDim.x) r_sum += r_losses[i];
  f_part[threadIdx.x] = f_sum;
  r_part[threadIdx.x] = r_sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      f_part[threadIdx.x] += f_part[threadIdx.x + stride];
      r_part[threadIdx.x] += r_part[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  // An empty set contributes nothing (see auditkit.ops.nabla_tau_loss).
  double forget_term = 0;
  double coefficient = 0;
  if (Bf > 0) {
    const double mean = f_part[0] / static_cast<double>(Bf);
    forget_term = per_sample ? alpha * mean : alpha * forget_penalty<double>(tau, mean);
    coefficient = alpha * forget_slope<double>(tau, mean) / static_cast<double>(Bf);
  }
  const double retain_term = Br > 0 ? (1.0 - alpha) * r_part[0] / static_cast<double>(Br) : 0.0;
  *loss = static_cast<acc_t>(forget_term + retain_term);
  *forget_coefficient = static_cast<acc_t>(coefficient);
}

unsigned int row_blocks(int64_t rows) {
  return static_cast<unsigned int>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}

void report_errors(const int* first, const Tensor& labels, const char* logits_name, const char* labels_name,
                   int64_t C) {
  if (first[kBadLabel] != INT_MAX) {
    const int64_t row = first[kBadLabel];
    TORCH_CHECK(false, labels_name, "[", row, "] = ", labels[row].item<int64_t>(), " is out of range for ", C,
                " classes");
  }
  TORCH_CHECK(first[kNonFinite] == INT_MAX, logits_name, "[", first[kNonFinite], "] contains NaN or inf");
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> nabla_tau_loss_cuda(
    const Tensor& forget_logits, const Tensor& forget_labels, const Tensor& retain_logits,
    const Tensor& retain_labels, double tau, double alpha, bool per_sample) {
  check_nabla_tau_inputs(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha);
  TORCH_CHECK(forget_logits.size(0) < INT_MAX && retain_logits.size(0) < INT_MAX,
              "forget_logits and retain_logits must have fewer than 2^31 rows");
  const c10::cuda::CUDAGuard guard(forget_logits.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
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
  Tensor forget_coefficient = at::empty({}, acc_options);
  Tensor f_losses = at::empty({Bf}, acc_options);
  Tensor r_losses = at::empty({Br}, acc_options);
  Tensor f_norms = at::empty({Bf}, acc_options);
  Tensor r_norms = at::empty({Br}, acc_options);
  Tensor f_grad = at::empty_like(f_logits);
  Tensor r_grad = at::empty_like(r_logits);
  Tensor errors = at::full({2 * kSlots}, INT_MAX, f_logits.options().dtype(at::kInt));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f_logits.scalar_type(), "nabla_tau_loss_cuda", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const bool batch_form = !per_sample;
    Tensor scales;
    if (Br > 0) {
      rows_kernel<scalar_t, acc_t><<<row_blocks(Br), kWarp * kRowsPerBlock, 0, stream>>>(
          r_logits.const_data_ptr<scalar_t>(), r_labels.const_data_ptr<int64_t>(), Br, C, Coefficient::kConstant,
          static_cast<acc_t>((1.0 - alpha) / static_cast<double>(Br)), acc_t(0), acc_t(0),
          r_losses.data_ptr<acc_t>(), r_norms.data_ptr<acc_t>(), nullptr, r_grad.data_ptr<scalar_t>(),
          errors.data_ptr<int>() + kSlots);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (Bf > 0) {
      if (batch_form) {
        scales = at::empty({Bf * static_cast<int64_t>(sizeof(RowScale<acc_t>))},
                           f_logits.options().dtype(at::kByte));
      }
      rows_kernel<scalar_t, acc_t><<<row_blocks(Bf), kWarp * kRowsPerBlock, 0, stream>>>(
          f_logits.const_data_ptr<scalar_t>(), f_labels.const_data_ptr<int64_t>(), Bf, C,
          batch_form ? Coefficient::kFromMean : Coefficient::kPerSample, acc_t(0), static_cast<acc_t>(tau),
          static_cast<acc_t>(alpha / static_cast<double>(Bf)), f_losses.data_ptr<acc_t>(),
          f_norms.data_ptr<acc_t>(),
          batch_form ? reinterpret_cast<RowScale<acc_t>*>(scales.data_ptr<uint8_t>()) : nullptr,
          f_grad.data_ptr<scalar_t>(), errors.data_ptr<int>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finish_kernel<acc_t><<<1, kFinishThreads, 0, stream>>>(
        f_losses.const_data_ptr<acc_t>(), Bf, r_losses.const_data_ptr<acc_t>(), Br, tau, alpha, per_sample,
        loss.data_ptr<acc_t>(), forget_coefficient.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const Tensor host_errors = errors.cpu();  // synchronises: the op's only host round trip
    report_errors(host_errors.const_data_ptr<int>(), f_labels, "forget_logits", "forget_labels", C);
    report_errors(host_errors.const_data_ptr<int>() + kSlots, r_labels, "retain_logits", "retain_labels", C);
    if (Bf > 0 && batch_form) {
      batch_form_gradient_kernel<scalar_t, acc_t><<<row_blocks(Bf), kWarp * kRowsPerBlock, 0, stream>>>(
          f_logits.const_data_ptr<scalar_t>(), f_labels.const_data_ptr<int64_t>(), Bf, C,
          reinterpret_cast<const RowScale<acc_t>*>(scales.const_data_ptr<uint8_t>()),
          forget_coefficient.const_data_ptr<acc_t>(), f_grad.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {loss, f_losses, r_losses, f_norms, r_norms, f_grad, r_grad};
}

}  // namespace
}  // namespace auditkit

TORCH_LIBRARY_IMPL(auditkit, CUDA, m) { m.impl("nabla_tau_loss", &auditkit::nabla_tau_loss_cuda); }
