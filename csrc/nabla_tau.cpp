// The schema of the fused ∇τ loss, defined once; each backend registers its kernel in its own file
// (nabla_tau_cpu.cpp, nabla_tau_cuda.cu) and Python adds the fake kernel and the autograd formula.
#include <torch/library.h>

TORCH_LIBRARY(auditkit, m) {
  // Returns the scalar loss, per-sample cross-entropy and ‖softmax - onehot‖₂ of both sets, and
  // d loss / d logits of both sets (the backward pass only scales them by the incoming gradient).
  m.def(
      "nabla_tau_loss(Tensor forget_logits, Tensor forget_labels, Tensor retain_logits, "
      "Tensor retain_labels, float tau, float alpha, bool per_sample) -> (Tensor loss, "
      "Tensor forget_losses, Tensor retain_losses, Tensor forget_grad_norms, "
      "Tensor retain_grad_norms, Tensor forget_dlogits, Tensor retain_dlogits)");
}
