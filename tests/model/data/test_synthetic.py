import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.data.datasets import DataOptions, prepare_dataset
from model.data.examples import build_prepared_data
from model.data.logs import validate_log
from model.data.synthetic import SyntheticConfig, attainable_click_prob, generate_synthetic, load_synthetic
from model.metrics import item_popularity


def test_generator_is_deterministic_and_sized():
    config = SyntheticConfig(users=30, items=20, scenarios=4, events_per_user=12, seed=5)
    a, b = generate_synthetic(config), generate_synthetic(config)
    assert a.equals(b) and len(a) == 30 * 12
    assert a.scenario.nunique() == 4 and a.item_id.nunique() <= 20
    assert a.groupby("user_id").timestamp.apply(lambda t: t.is_monotonic_increasing).all()


def test_labels_follow_the_oracle_probability():
    frame = generate_synthetic(SyntheticConfig(users=500, events_per_user=40))
    assert roc_auc_score(frame.label, frame.oracle_prob) > 0.78
    assert 0.08 < frame.label.mean() < 0.2 and frame.oracle_prob.max() <= 1


@pytest.mark.parametrize("divergence,expect_low", [(0.0, False), (1.0, True)])
def test_divergence_controls_how_much_scenario_interests_differ(divergence, expect_low):
    frame = generate_synthetic(SyntheticConfig(users=300, items=50, scenarios=2, events_per_user=200,
                                               divergence=divergence))
    # Correlation of each user's per-item click probability across the two scenarios.
    table = frame.pivot_table(index=["user_id", "item_id"], columns="scenario", values="oracle_prob").dropna()
    corr = np.corrcoef(table["s0"], table["s1"])[0, 1]
    assert (corr < 0.6) if expect_low else (corr > 0.9)


def test_loader_keeps_oracle_and_declares_scenarios():
    log = load_synthetic(SyntheticConfig(users=10, events_per_user=5, scenarios=3))
    assert log.has_oracle and log.scenario_order == ["s0", "s1", "s2"]


def test_rejects_divergence_outside_unit_interval():
    with pytest.raises(ValueError, match="divergence"):
        generate_synthetic(SyntheticConfig(divergence=1.5))


# One small world per divergence, shared by the reference's tests (preparing it is the slow part).
REFERENCE_WORLD = dict(users=1500, items=100, events_per_user=60, seed=3)


@pytest.fixture(scope="module", params=[0.0, 0.7], ids=["divergence=0", "divergence=0.7"])
def world(request):
    config = SyntheticConfig(divergence=request.param, **REFERENCE_WORLD)
    return config, prepare_dataset(DataOptions(history_length=30, synthetic=config))


def test_attainable_reference_lies_between_popularity_and_the_oracle(world):
    config, data = world
    train, test = data.splits["train"], data.splits["test"]
    auc = {"popularity": roc_auc_score(test.label, item_popularity(train.target_item, train.label, test.target_item)),
           "attainable": roc_auc_score(test.label, attainable_click_prob(config, data)),
           "oracle": roc_auc_score(test.label, test.oracle_prob)}
    assert auc["popularity"] + 0.1 < auc["attainable"] < auc["oracle"], auc


def test_attainable_reference_is_calibrated(world):
    # It is the exact posterior predictive, so within any band of its values the click rate matches it
    # (a posterior that ignores the scenario tags is off by 0.06 in the top band at divergence 0.7).
    config, data = world
    examples = data.splits["train"]
    prob = attainable_click_prob(config, data, split="train")
    band = np.digitize(prob, np.quantile(prob, np.linspace(0, 1, 11)[1:-1]))
    for b in range(10):
        assert abs(examples.label[band == b].mean() - prob[band == b].mean()) < 0.02, b


def test_scenario_tags_pay_only_once_tastes_diverge(world):
    config, data = world
    test = data.splits["test"]
    tagged, pooled = attainable_click_prob(config, data), attainable_click_prob(config, data, pooled_only=True)
    if config.divergence == 0:
        # one taste in every scenario: the posterior depends on the pooled clicks alone
        np.testing.assert_allclose(tagged, pooled, rtol=1e-9)
    else:
        assert roc_auc_score(test.label, tagged) > roc_auc_score(test.label, pooled) + 0.02


def test_attainable_reference_uses_only_earlier_events():
    config = SyntheticConfig(users=200, items=40, events_per_user=40, seed=9)
    frame = generate_synthetic(config)

    def reference(frame):
        log = validate_log(frame, features=[], scenario_order=[f"s{i}" for i in range(config.scenarios)])
        data = build_prepared_data(log, "synthetic", history_length=20, split="time", split_seed=0)
        return data.splits["test"].timestamp, attainable_click_prob(config, data)

    timestamp, before = reference(frame)
    cut = np.median(timestamp)
    changed = frame.copy()
    later = changed.timestamp >= cut
    changed.loc[later, "label"] = 1 - changed.loc[later, "label"]   # every later click undone, every later miss a click
    changed_timestamp, after = reference(changed)
    assert np.array_equal(timestamp, changed_timestamp)
    earlier = timestamp < cut
    np.testing.assert_array_equal(before[earlier], after[earlier])
    assert not np.allclose(before[~earlier], after[~earlier])


def test_rejects_taste_and_click_parameters_outside_their_range():
    with pytest.raises(ValueError, match="taste_concentration"):
        generate_synthetic(SyntheticConfig(taste_concentration=0))
    with pytest.raises(ValueError, match="peak_click_prob"):
        generate_synthetic(SyntheticConfig(peak_click_prob=1.5))
