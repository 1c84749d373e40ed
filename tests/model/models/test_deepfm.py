import itertools

import torch
from torch import nn

from model.batch import Batch
from model.data.schema import CategoricalFeature, FeatureSchema
from model.layers.towers import DEFAULT_HIDDEN
from model.models import build_model, model_config

SCHEMA = FeatureSchema(
    dataset="test", scenarios=["a", "b"], history_length=3,
    features=[CategoricalFeature("gender", "user"), CategoricalFeature("genre", "item")],
    vocab_sizes={"item_id": 8, "scenario": 4, "gender": 4, "genre": 5},
)
# Two requests, two candidates each; the second user has no history.
BATCH = Batch(
    hist_items=torch.tensor([[0, 3, 5], [0, 0, 0]]),
    hist_scenarios=torch.tensor([[0, 2, 3], [0, 0, 0]]),
    target_scenario=torch.tensor([3, 2]),
    request_features=torch.tensor([[2], [3]]),
    cand_items=torch.tensor([[4, 6], [7, 2]]),
    cand_features=torch.tensor([[[2], [4]], [[3], [1]]]),
    request_numeric=torch.zeros((2, 0)),
    cand_numeric=torch.zeros((2, 2, 0)),
)


def make(**overrides):
    torch.manual_seed(0)
    return build_model("deepfm", SCHEMA, **{"embed_dim": 3, "tower": (4,), **overrides}).eval()


def hand_fm(model, b: int, c: int) -> float:
    """FM by the book: <w, x> + sum_{i<j} <v_i, v_j>, the history as a multi-hot x summing to 1."""
    def fields(emb):
        hist = [int(i) for i in BATCH.hist_items[b] if i != 0]
        history = sum((emb.item.weight[i] for i in hist), torch.zeros(emb.dim)) / max(len(hist), 1)
        return [emb.item.weight[BATCH.cand_items[b, c]], history,
                emb.scenario.weight[BATCH.target_scenario[b]],
                emb.features["gender"].weight[BATCH.request_features[b, 0]],
                emb.features["genre"].weight[BATCH.cand_features[b, c, 0]]]

    first = sum(float(w) for w in fields(model.first_order.embeddings))
    v = fields(model.inputs.embeddings)
    second = sum(float(v[i] @ v[j]) for i, j in itertools.combinations(range(len(v)), 2))
    return first + second


def test_defaults():
    config = model_config("deepfm")
    assert (config.embed_dim, config.tower, config.init_std) == (32, DEFAULT_HIDDEN, 0.05)
    assert build_model("deepfm", SCHEMA).output_dim == 1


def test_fm_part_equals_a_hand_computation():
    model = make()
    with torch.no_grad():
        fm = model.fm(BATCH)
        for b, c in itertools.product(range(2), range(2)):
            assert abs(float(fm[b, c]) - hand_fm(model, b, c)) < 1e-6
        # The logit is FM + DNN: with the DNN's output layer zeroed only the FM part is left.
        nn.init.zeros_(model.dnn.logit.weight)
        nn.init.zeros_(model.dnn.logit.bias)
        torch.testing.assert_close(model(BATCH), fm, rtol=0, atol=1e-7)


def test_fm_and_dnn_share_the_embeddings():
    model = make()
    d_tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.embedding_dim == 3]
    assert all(any(t is m for m in model.inputs.modules()) for t in d_tables)
    # Gradients from the second-order term and from the DNN both land in the same item table.
    model.train()
    model.fm(BATCH).sum().backward()
    fm_grad = model.inputs.embeddings.item.weight.grad.clone()
    model.zero_grad()
    model.dnn(model.inputs(BATCH).flat).sum().backward()
    dnn_grad = model.inputs.embeddings.item.weight.grad
    assert fm_grad.abs().sum() > 0 and dnn_grad.abs().sum() > 0


def test_first_order_weights_are_scalars_per_vocabulary_entry():
    model = make()
    assert model.first_order.embeddings.item.weight.shape == (8, 1)
    assert model.first_order.embeddings.features["genre"].weight.shape == (5, 1)
