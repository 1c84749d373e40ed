from pathlib import Path

import numpy as np
import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.movielens import AGE_GROUPS, load_movielens


def write_grouplens_folder(root: Path) -> Path:
    """A tiny copy of GroupLens's original ml-1m layout ('::'-separated, latin-1)."""
    folder = root / "ml-1m"
    folder.mkdir()
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Am\xe9lie (2001)::Comedy|Romance\n"
        "3::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1"))
    (folder / "ratings.dat").write_text(
        "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n2::1::2::978300275\n"
        "3::2::4::978824291\n3::3::1::978824292\n3::1::5::978824293\n")
    return folder


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
        "user": "user", "gender": "user", "age": "user", "occupation": "user", "zip": "user", "first_genre": "item"}
    assert dict(zip(log.frame.user_id, log.frame.zip)) == {"1": "48067", "2": "70072", "3": "55117"}
    assert dict(zip(log.frame.user_id, log.frame.age)) == {"1": "1", "2": "56", "3": "25"}
    assert not log.frame.is_behaviour.any()
    data = prepare_dataset(DataOptions(dataset="movielens-1m", data_dir=str(folder), split="random",
                                       protocol="scenario-wise-rec"))
    for split in data.splits.values():
        assert (split.hist_items == 0).all()                    # every history is empty


def test_protocol_is_checked_against_the_dataset():
    with pytest.raises(ValueError, match="scenario-wise-rec"):
        prepare_dataset(DataOptions(dataset="synthetic", protocol="scenario-wise-rec"))
