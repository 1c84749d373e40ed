import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.data.synthetic import SyntheticConfig, generate_synthetic, load_synthetic


def test_generator_is_deterministic_and_sized():
    config = SyntheticConfig(users=30, items=20, scenarios=4, events_per_user=12, seed=5)
    a, b = generate_synthetic(config), generate_synthetic(config)
    assert a.equals(b) and len(a) == 30 * 12
    assert a.scenario.nunique() == 4 and a.item_id.nunique() <= 20
    assert a.groupby("user_id").timestamp.apply(lambda t: t.is_monotonic_increasing).all()


def test_labels_follow_the_oracle_probability():
    frame = generate_synthetic(SyntheticConfig(users=500, events_per_user=40))
    assert roc_auc_score(frame.label, frame.oracle_prob) > 0.8
    assert 0.15 < frame.label.mean() < 0.6


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
