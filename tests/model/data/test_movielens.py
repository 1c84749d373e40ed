import numpy as np
import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.movielens import AGE_GROUPS, load_movielens
from model.testing import write_grouplens_folder


def test_grouplens_layout(tmp_path):
    log = load_movielens(write_grouplens_folder(tmp_path))
    frame = log.frame
    assert len(frame) == 7
    assert frame.label.tolist() == [1, 0, 1, 0, 1, 0, 1]       # rating > 3
    assert dict(zip(frame.user_id, frame.scenario)) == {"1": "under-25", "2": "35-plus", "3": "25-34"}
    assert set(frame.first_genre) == {"Animation", "Comedy", "Action"}
    assert {f.name: f.side for f in log.features} == {"gender": "user", "occupation": "user",
                                                      "zip_prefix": "user", "first_genre": "item"}
    assert frame.is_behaviour.all()                             # every rating is a watched movie


def test_age_groups_cover_every_code():
    assert sorted(a for group in AGE_GROUPS.values() for a in group) == [1, 18, 25, 35, 45, 50, 56]


@pytest.mark.real_data
def test_scenario_sizes_match_the_scenario_wise_rec_protocol(movielens_dir):
    log = load_movielens(movielens_dir)
    counts = log.frame.scenario.value_counts().to_dict()
    assert counts == {"under-25": 210_747, "25-34": 395_556, "35-plus": 393_906}
    assert len(log.frame) == 1_000_209


@pytest.mark.real_data
def test_prepared_time_split_has_no_future_in_training(movielens_dir):
    data = prepare_dataset(DataOptions(dataset="movielens-1m", data_dir=str(movielens_dir)))
    train, test = data.splits["train"], data.splits["test"]
    assert train.timestamp.max() <= test.timestamp.min()
    assert data.schema.scenarios == ["under-25", "25-34", "35-plus"]
    assert train.request_features.shape[1] == 3 and train.item_features.shape[1] == 1
    sizes = np.array([len(s) for s in data.splits.values()])
    assert sizes.sum() == 1_000_209


def test_scenario_wise_rec_protocol_has_its_features_and_no_history(tmp_path):
    folder = write_grouplens_folder(tmp_path)
    log = load_movielens(folder, protocol="scenario-wise-rec")
    assert {f.name: f.side for f in log.features} == {
        "user": "user", "gender": "user", "occupation": "user", "zip": "user", "first_genre": "item"}
    assert dict(zip(log.frame.user_id, log.frame.zip)) == {"1": "48067", "2": "70072", "3": "55117"}
    # age is the benchmark's dense input, min-max scaled (its MinMaxScaler), not a category
    assert [(c.name, c.side, c.scaling) for c in log.numeric] == [("age", "user", "min-max")]
    assert dict(zip(log.frame.user_id, log.frame.age)) == {"1": 1.0, "2": 56.0, "3": 25.0}
    assert not log.frame.is_behaviour.any()
    data = prepare_dataset(DataOptions(dataset="movielens-1m", data_dir=str(folder), split="random",
                                       protocol="scenario-wise-rec"))
    (age,) = data.schema.numeric_features
    assert age.scaling == "min-max"
    for split in data.splits.values():
        assert (split.hist_items == 0).all()                    # every history is empty
        expected = (np.clip(split.request_numeric[:, 0], 0, 1))
        np.testing.assert_array_equal(split.request_numeric[:, 0], expected)
    scaled = age.transform([age.low, age.high, (age.low + age.high) / 2, None, age.high + 10])
    np.testing.assert_allclose(scaled, [0.0, 1.0, 0.5, (age.mean - age.low) / (age.high - age.low), 1.0],
                               rtol=1e-6)


def test_protocol_is_checked_against_the_dataset():
    with pytest.raises(ValueError, match="scenario-wise-rec"):
        prepare_dataset(DataOptions(dataset="synthetic", protocol="scenario-wise-rec"))
