import numpy as np
import torch

from model.data.datasets import DataOptions, prepare_dataset
from model.data.synthetic import SyntheticConfig
from model.diagnostics import entropy_ratio, history_path_diagnostics, mean_pairwise_cosine
from model.models import build_model


def test_entropy_ratio_is_one_for_uniform_and_zero_for_one_hot_attention():
    mask = torch.tensor([[True, True, True, False]])
    uniform = torch.tensor([[[1 / 3, 1 / 3, 1 / 3, 0.0]]])
    one_hot = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    rows = torch.ones(1, 1, dtype=torch.bool)
    assert torch.allclose(entropy_ratio(uniform, mask, rows), torch.tensor([1.0]))
    assert torch.allclose(entropy_ratio(one_hot, mask, rows), torch.tensor([0.0]), atol=1e-6)


def test_pairwise_cosine_ignores_padding_and_the_diagonal():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    assert torch.allclose(mean_pairwise_cosine(x, torch.tensor([[True, True, False]])), torch.tensor([0.0]))
    assert torch.allclose(mean_pairwise_cosine(x[:, :1].repeat(1, 3, 1), torch.ones(1, 3, dtype=torch.bool)),
                          torch.tensor([1.0]))


def test_diagnostics_of_a_sainet_and_none_for_other_models():
    options = DataOptions(dataset="synthetic", history_length=8,
                          synthetic=SyntheticConfig(users=150, items=40, events_per_user=15))
    data = prepare_dataset(options)
    torch.manual_seed(0)
    sainet = build_model("sainet", data.schema, embed_dim=8, tower=(16,))
    report = history_path_diagnostics(sainet, data.splits["valid"], max_examples=100)
    assert len(report["sie_entropy_ratio"]) == sainet.config.blocks
    assert all(0 < r <= 1 + 1e-6 for r in [*report["sie_entropy_ratio"], report["tif_entropy_ratio"]])
    assert -1 <= report["cosine_raw"] <= 1 and -1 <= report["cosine_after_blocks"] <= 1
    eligible = int(((data.splits["valid"].hist_items != 0).sum(axis=1) >= 2).sum())
    assert report["sampled"] == min(100, eligible) and report["mean_behaviours"] >= 2
    assert history_path_diagnostics(sainet, data.splits["valid"], max_examples=100) == report   # seeded sample
    assert history_path_diagnostics(build_model("dnn", data.schema), data.splits["valid"]) is None
    assert np.isfinite(report["share_with_2_or_more_behaviours"])


def test_the_weights_reported_are_the_ones_forward_applies():
    from model.layers.attention import ScenarioAwareSelfAttention, TargetAwareInterestFusion

    torch.manual_seed(0)
    x, scenarios = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 4 + [True]])
    sie = ScenarioAwareSelfAttention(8, heads=2)
    weights = sie.attention_weights(x, scenarios, mask)                        # [B, h, N, N]
    _, _, v = sie._heads(x, scenarios)
    by_hand = sie.output((weights @ v).transpose(1, 2).reshape(3, 5, 8)) * mask[..., None]
    assert torch.allclose(by_hand, sie(x, scenarios, mask), atol=1e-5)
    tif = TargetAwareInterestFusion(8, query_dim=8)
    target = torch.randn(3, 2, 8)
    assert torch.allclose(tif.attention_weights(target, x, mask) @ tif.value(x), tif(target, x, mask), atol=1e-6)
