"""Non-finite guard: the one place where a step with a NaN/inf loss or gradient is refused, at every ZeRO stage.

DeepSpeed skips a NaN step under ZeRO 1-3 but applies it under ZeRO-0 fp32 (checked on DeepSpeed 0.19.8). The guard is a mixin
on the client optimizer: whatever DeepSpeed wraps around it (basic, ZeRO 1/2/3 partitions, bf16/fp16 masters),
the inner ``step()`` sees the final gradients. When their norm or the trainer's all-reduced loss flag is
non-finite it returns without touching parameters or Adam moments; DeepSpeed then zeroes the gradients, so the
step is skipped on every rank alike.
"""

from __future__ import annotations

import math

import torch


class NonfiniteGuard:
    """Mixin for a ``torch.optim.Optimizer`` subclass; configure with :meth:`configure_guard`."""

    def configure_guard(self, *, partitioned: bool, clip_norm: float) -> None:
        """``partitioned``: ZeRO >= 1 (DeepSpeed clips); ``clip_norm`` > 0: clip here (ZeRO-0 fp32)."""
        self._guard_partitioned = partitioned
        self._guard_clip = clip_norm
        self.force_skip = False  # set by the trainer from its all-reduced loss flag before each step
        self.last_skipped = False
        self.last_norm = float("nan")

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]

    def _local_sq_norm(self) -> torch.Tensor:
        """Squared L2 norm of all gradients: per-tensor norms in one fused kernel, summed in fp64, one sync."""
        grads = self._grads()
        if not grads:
            return torch.zeros((), dtype=torch.float64)
        norms = torch._foreach_norm([g.detach() for g in grads], 2)
        return torch.stack([n.float() for n in norms]).double().pow(2).sum().cpu()

    @torch.no_grad()
    def step(self, closure=None):
        # ZeRO >= 1 calls this once per parameter group with that group's gradient partition, after its own
        # global overflow check; ZeRO-0 calls it once with the full (already all-reduced) gradients. A local
        # check is therefore global in both cases and needs no collective.
        sq = self._local_sq_norm().item()
        norm = math.sqrt(sq) if math.isfinite(sq) else float("nan")
        self.last_norm = norm
        self._global_grad_norm = norm  # DeepSpeed reads this after a basic-optimizer (ZeRO-0 fp32) step
        if self.force_skip or not math.isfinite(norm):
            self.last_skipped = True
            return None
        self.last_skipped = False
        if self._guard_clip > 0 and norm > self._guard_clip:
            scale = self._guard_clip / (norm + 1e-6)
            torch._foreach_mul_(self._grads(), scale)
        return super().step(closure)


def guarded(optimizer_cls: type) -> type:
    """``optimizer_cls`` with the non-finite guard mixed in (keeps isinstance checks of DeepSpeed working)."""
    return type(f"Guarded{optimizer_cls.__name__}", (NonfiniteGuard, optimizer_cls), {})
