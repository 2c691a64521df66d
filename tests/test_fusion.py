"""AdapterFusion's layer (work in progress): weights sum to one, one adapter with V = I is that adapter."""
import torch

from adapters.fusion import FusionLayer


def test_fusion_weights_sum_to_one_per_token_and_regulariser_starts_near_zero():
    torch.manual_seed(0)
    f = FusionLayer(8).eval()
    f.return_weights = True
    out = f(torch.randn(2, 5, 8), torch.randn(2, 5, 3, 8))
    assert out.shape == (2, 5, 8)
    assert torch.allclose(f.last_weights.sum(-1), torch.ones(2, 5))
    assert f.regularization().item() < 1e-9


def test_fusion_over_one_adapter_with_identity_value_is_that_adapter():
    f = FusionLayer(8).eval()
    with torch.no_grad():
        f.value.weight.copy_(torch.eye(8))
    a = torch.randn(2, 5, 1, 8)
    assert torch.allclose(f(torch.randn(2, 5, 8), a), a[:, :, 0], atol=1e-6)


def test_static_fusion_has_no_value_matrix():
    f = FusionLayer(8, dynamic=False)
    assert f.value is None and f.regularization().item() == 0.0
