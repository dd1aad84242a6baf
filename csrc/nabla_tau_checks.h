// Host-side argument checks shared by the CPU and CUDA kernels: every message names the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace auditkit {

inline void check_logits(const at::Tensor& logits, const char* name) {
  TORCH_CHECK(logits.dim() == 2, name, " must be 2-D [B, C], got shape ", logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              name, " must be float32, float64, float16 or bfloat16, got ", logits.scalar_type());
  TORCH_CHECK(logits.size(1) >= 1, name, " must have at least one class (C >= 1), got shape ",
              logits.sizes());
}

inline void check_labels(const at::Tensor& labels, const at::Tensor& logits, const char* name,
                         const char* logits_name) {
  TORCH_CHECK(labels.dim() == 1, name, " must be 1-D [B], got shape ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, name, " must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.size(0) == logits.size(0), name, " has ", labels.size(0), " entries but ",
              logits_name, " has ", logits.size(0), " rows");
}

inline void check_nabla_tau_inputs(const at::Tensor& forget_logits, const at::Tensor& forget_labels,
                                   const at::Tensor& retain_logits, const at::Tensor& retain_labels,
                                   double tau, double alpha) {
  check_logits(forget_logits, "forget_logits");
  check_logits(retain_logits, "retain_logits");
  check_labels(forget_labels, forget_logits, "forget_labels", "forget_logits");
  check_labels(retain_labels, retain_logits, "retain_labels", "retain_logits");
  TORCH_CHECK(forget_logits.size(1) == retain_logits.size(1), "forget_logits has C=",
              forget_logits.size(1), " classes but retain_logits has C=", retain_logits.size(1));
  TORCH_CHECK(forget_logits.scalar_type() == retain_logits.scalar_type(), "forget_logits is ",
              forget_logits.scalar_type(), " but retain_logits is ", retain_logits.scalar_type());
  const auto device = forget_logits.device();
  TORCH_CHECK(forget_labels.device() == device && retain_logits.device() == device &&
                  retain_labels.device() == device,
              "forget_logits, forget_labels, retain_logits and retain_labels must be on one device, got ",
              device, ", ", forget_labels.device(), ", ", retain_logits.device(), ", ",
              retain_labels.device());
  TORCH_CHECK(std::isfinite(tau), "tau must be finite, got ", tau);
  TORCH_CHECK(std::isfinite(alpha), "alpha must be finite, got ", alpha);
}

}  // namespace auditkit
