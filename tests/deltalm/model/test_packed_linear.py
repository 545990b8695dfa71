"""The CPU inference fast path on prepacked oneDNN weights (deltalm/model/modules/linear.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from deltalm.model.modules import linear as linear_module
from deltalm.model.modules.linear import Linear, linear, packed_count, release_packs
from tests.deltalm.model.helpers import padded_batch, tiny_model

pytestmark = pytest.mark.skipif(not linear_module.PACKING_AVAILABLE, reason="torch built without oneDNN")


@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_f_linear(activation, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 48)
    w = torch.randn(96, 48)
    b = torch.randn(96) if bias else None
    want = F.linear(x, w, b)
    want = {"none": want, "gelu": F.gelu(want), "relu": F.relu(want)}[activation]
    with torch.no_grad():
        got = linear(x, w, b, activation)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert w in linear_module._PACKS  # it did take the packed path


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        linear(torch.randn(2, 3), torch.randn(4, 3), activation="tanh")


def test_pack_follows_in_place_weight_updates():
    layer = Linear(16, 8).eval()
    x = torch.randn(5, 16)
    with torch.no_grad():
        before = layer(x)
        assert packed_count(layer) == 1
        layer.weight.mul_(2.0)  # an optimizer step, load_state_dict, ... bump the version counter
        after = layer(x)
        assert torch.allclose(after, F.linear(x, layer.weight, layer.bias), atol=1e-6)
        assert not torch.allclose(after, before)
        layer.load_state_dict({"weight": torch.zeros(8, 16), "bias": torch.ones(8)})
        assert torch.equal(layer(x), torch.ones(5, 8))


def test_training_never_uses_packs_and_gets_gradients():
    layer = Linear(16, 8).eval()
    x = torch.randn(5, 16, requires_grad=True)
    layer(x).sum().backward()  # autograd on: plain F.linear
    assert packed_count(layer) == 0
    assert layer.weight.grad is not None and x.grad is not None
    layer.train()
    with torch.no_grad():
        layer(x)  # train mode: no packs either (dropout-style behaviour stays the module's)
    assert packed_count(layer) == 0


def test_model_packs_in_eval_inference_and_releases_on_train():
    model = tiny_model()
    b = padded_batch()
    with torch.no_grad():
        packed = model(b["encoder_input_tokens"], b["decoder_input_tokens"])
    assert packed_count(model) > 0
    copy.deepcopy(model)  # packs live outside the module: copying and pickling are unaffected
    model.train()
    assert packed_count(model) == 0
    model.eval()
    plain = model(b["encoder_input_tokens"], b["decoder_input_tokens"])  # autograd on: no packs
    assert packed_count(model) == 0
    real = b["decoder_loss_weights"] > 0
    assert torch.allclose(packed[real], plain.detach()[real], atol=1e-5)


def test_config_switch_turns_packing_off():
    model = tiny_model(cpu_packed_linear=False)
    b = padded_batch()
    with torch.inference_mode():
        model(b["encoder_input_tokens"], b["decoder_input_tokens"])
    assert packed_count(model) == 0


def test_release_packs_counts_what_it_dropped():
    model = tiny_model()
    with torch.no_grad():
        model.encode(padded_batch()["encoder_input_tokens"])
    n = packed_count(model)
    assert n > 0 and release_packs(model) == n and packed_count(model) == 0
