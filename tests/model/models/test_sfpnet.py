import torch

from model.layers.attention import masked_mean
from model.testing import random_batch, seeded_model, tiny_schema

SCHEMA = tiny_schema(history_length=8, items=40, genres=7)
SMALL = {"embed_dim": 8, "tower": (16, 8)}


def make(**overrides):
    return seeded_model("sfpnet", SCHEMA, **{**SMALL, **overrides})


def batch_of(candidates=3, seed=0, empty_rows=(0, 2)):
    return random_batch(SCHEMA, candidates=candidates, seed=seed, empty_rows=empty_rows)


def test_history_field_index_matches_the_shared_inputs():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        inputs = model.inputs(batch)
        pooled = masked_mean(model.inputs.embeddings.item(batch.hist_items), batch.history_mask)
    torch.testing.assert_close(inputs.fields[:, 0, model.inputs.history_field], pooled)


def test_blocks_tailor_every_field_and_gate_the_behaviour_representation():
    model = make()
    batch = batch_of()
    with torch.no_grad():
        fields, gates = model.tailored_fields(batch)
        original = model.inputs(batch).fields
    assert fields.shape == original.shape and len(gates) == model.config.blocks == 2
    for gate in gates:
        assert (gate > 0).all() and (gate < 2).all()
    changed = (fields - original).abs().amax(dim=-1)                  # [B, C, F]
    has_history = batch.history_mask.any(dim=1)
    others = [f for f in range(model.inputs.num_fields) if f != model.inputs.history_field]
    assert (changed[:, :, others] > 0).all()                          # SAM re-defines every field
    # No behaviours, nothing to tailor: the history field stays zero for cold-start users.
    assert (fields[~has_history][:, :, model.inputs.history_field] == 0).all()
    assert (fields[has_history][:, :, model.inputs.history_field].abs().sum(-1) > 0).all()


def test_target_scenario_changes_scores_and_the_history_representation():
    model = make()
    batch = batch_of(empty_rows=())
    other = batch._replace(target_scenario=(batch.target_scenario - 2 + 1) % 3 + 2)
    with torch.no_grad():
        a, b = model(batch), model(other)
        fa, _ = model.tailored_fields(batch)
        fb, _ = model.tailored_fields(other)
    assert not torch.allclose(a, b)
    assert not torch.allclose(fa[:, :, model.inputs.history_field], fb[:, :, model.inputs.history_field])


def test_number_of_blocks_is_an_option():
    for blocks in (0, 1, 3):
        model = make(blocks=blocks)
        assert len(model.blocks) == blocks
        assert torch.isfinite(model(batch_of())).all()
