"""``nn.Linear`` with a CPU inference fast path: the weight prepacked once for oneDNN.

On CPU, ``torch.nn.functional.linear`` runs through the BLAS library torch was built with (MKL). For the
few-row GEMMs of incremental decoding that is far from the core's peak, and on CPUs MKL does not tune for
(AMD EPYC) the output projection over the vocabulary runs at half of it. oneDNN on a weight reordered once
into its blocked layout (what ``torch.compile``'s CPU "freezing" does) reaches the peak: measured on one
EPYC core, the 40 x 512 x 32,000 output projection takes 13.4 ms instead of 24 ms, and FFN GEMMs 0.8x the
time (docs/benchmarks/generation.md).

The fast path is taken only where it cannot change training: eval mode, autograd off (``torch.no_grad`` or
``torch.inference_mode``), CPU, float32, not a ZeRO-3 partitioned parameter, and the module's ``packed`` flag
on (``DeltaLMConfig.cpu_packed_linear``).
Results equal ``F.linear`` up to float rounding (a different summation order). The packed copy is cached per
weight tensor, keyed weakly (it disappears with the weight), rebuilt when the weight changes (its version
counter moves on every in-place update: optimizer steps, ``load_state_dict``; its storage or shape may
change too), and dropped by
:func:`release_packs` (``DeltaLM.train()`` calls it, so packs live only while the model is used for inference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

ACTIVATIONS = ("none", "gelu", "relu")  # exact (erf) GELU, as XLM-R

# weight tensor (by identity) -> ((version, data pointer), shape, packed weight); weak keys: a pack never outlives its weight
_PACKS = WeakIdKeyDictionary()


def _ops_available() -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


PACKING_AVAILABLE = _ops_available()


def _activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return F.gelu(y)
    if activation == "relu":
        return F.relu(y)
    return y


def _packable(x: torch.Tensor) -> bool:
    """The input side of the fast-path conditions (checked on every call: keep it cheap)."""
    return (
        PACKING_AVAILABLE
        and not torch.is_grad_enabled()
        and x.dtype is torch.float32
        and x.device.type == "cpu"
        and x.dim() >= 2
        and x.numel() > 0
    )


def _weight_packable(weight: torch.Tensor) -> bool:
    return (
        weight.dtype is torch.float32
        and weight.device.type == "cpu"
        and not weight.is_inference()  # no version counter to tell a stale pack
        and not hasattr(weight, "ds_id")  # a ZeRO-3 partitioned parameter: gathered anew for every use
    )


def _packed(weight: torch.Tensor) -> torch.Tensor | None:
    """The packed copy of ``weight`` (made or remade as needed), or None when it cannot have one."""
    entry = _PACKS.get(weight)
    if entry is not None and entry[0] == (weight._version, weight.data_ptr()) and entry[1] == weight.shape:
        return entry[2]
    if not _weight_packable(weight):
        return None
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
    _PACKS[weight] = ((weight._version, weight.data_ptr()), weight.shape, packed)
    return packed


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "none",
    packed: bool = True,
) -> torch.Tensor:
    """``activation(x @ weight.T + bias)``; on the packed oneDNN weight when allowed (see the module doc)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
    packed_weight = _packed(weight) if packed and _packable(x) else None
    if packed_weight is not None:
        attr = "none" if activation == "gelu" else ""  # oneDNN's GELU flavour: "none" = exact (erf)
        b = None if bias is None else bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed_weight, b, activation, [None], attr)
    return _activate(F.linear(x, weight, bias), activation)


def release_packs(module: nn.Module) -> int:
    """Drop the packed copies of ``module``'s parameters (frees their memory); returns how many there were."""
    return sum(_PACKS.pop(p, None) is not None for p in module.parameters())


def packed_count(module: nn.Module) -> int:
    """How many of ``module``'s parameters have a packed copy now."""
    return sum(p in _PACKS for p in module.parameters())


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose CPU inference in eval mode uses the packed weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, packed: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.packed = packed

    def packs(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` runs on the packed weight now."""
        return self.packed and not self.training and _packable(x) and _packed(self.weight) is not None

    def forward(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        return linear(x, self.weight, self.bias, activation, self.packed and not self.training)
