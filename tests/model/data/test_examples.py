import numpy as np
import pandas as pd
import pytest

from model.data.datasets import DataOptions, prepare_dataset
from model.data.examples import PreparedData, build_prepared_data
from model.data.logs import validate_log
from model.data.schema import OOV_INDEX
from model.data.synthetic import SyntheticConfig, generate_synthetic


def _log(rows, split=None):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "scenario", "timestamp", "label"])
    if split is not None:
        frame["split"] = split
    return validate_log(frame, features=[])


def _histories(data: PreparedData, split: str) -> list[list[tuple[str, str]]]:
    examples = data.splits[split]
    items, scenarios = data.vocabularies["item_id"], data.vocabularies["scenario"]
    out = []
    for hist_items, hist_scen in zip(examples.hist_items, examples.hist_scenarios):
        real = hist_items != 0
        out.append(list(zip(items.decode(hist_items[real]), scenarios.decode(hist_scen[real]))))
    return out


def test_history_holds_only_earlier_behaviours_with_log_order_breaking_ties():
    # Log rows deliberately out of time order and interleaved across users.
    rows = [
        ("u1", "d", "s2", 3, 1),
        ("u2", "x", "s1", 1, 1),
        ("u1", "a", "s1", 1, 1),
        ("u1", "b", "s1", 2, 1),   # tie at t=2: b comes first in the log ...
        ("u1", "c", "s2", 2, 0),   # ... so c (a non-click) sees a, b; c itself is no behaviour
        ("u1", "e", "s1", 2, 1),   # e sees a, b (c is not a behaviour)
    ]
    data = build_prepared_data(_log(rows, ["train"] * 6), "t", history_length=3, split="given", split_seed=0)
    examples = data.splits["train"]
    order = list(zip(examples.user_id, data.vocabularies["item_id"].decode(examples.target_item)))
    histories = dict(zip(order, _histories(data, "train")))
    assert histories[("u1", "a")] == []
    assert histories[("u1", "b")] == [("a", "s1")]
    assert histories[("u1", "c")] == [("a", "s1"), ("b", "s1")]
    assert histories[("u1", "e")] == [("a", "s1"), ("b", "s1")]
    assert histories[("u1", "d")] == [("a", "s1"), ("b", "s1"), ("e", "s1")]
    assert histories[("u2", "x")] == []


def test_history_keeps_the_most_recent_n_right_aligned():
    rows = [("u", f"i{t}", "s", t, 1) for t in range(6)]
    data = build_prepared_data(_log(rows, ["train"] * 6), "t", history_length=2, split="given", split_seed=0)
    hist = data.splits["train"].hist_items
    decode = data.vocabularies["item_id"].decode
    assert list(decode(hist[-1])) == ["i3", "i4"]
    assert hist[0].tolist() == [0, 0] and hist[1][0] == 0 and hist[1][1] != 0


def test_no_history_ever_holds_its_own_event_or_a_later_one():
    config = SyntheticConfig(users=60, items=40, scenarios=3, events_per_user=30, seed=3)
    log_frame = validate_log(generate_synthetic(config), features=[]).frame
    data = prepare_dataset(DataOptions(history_length=8, synthetic=config))
    items = data.vocabularies["item_id"]
    frame = log_frame.assign(order=np.arange(len(log_frame)))
    for split in ("train", "valid", "test"):
        examples = data.splits[split]
        for row in range(0, len(examples), 7):
            user, ts = examples.user_id[row], examples.timestamp[row]
            mine = frame[frame.user_id == user]
            target_order = mine[(mine.timestamp == ts) &
                                (items.encode(mine.item_id) == examples.target_item[row])].order.min()
            earlier = mine[(mine.label == 1) & ((mine.timestamp < ts) |
                                                ((mine.timestamp == ts) & (mine.order < target_order)))]
            expected = items.encode(earlier.item_id.to_numpy()[-8:])
            got = examples.hist_items[row][examples.hist_items[row] != 0]
            assert got.tolist() == expected.tolist()


def test_vocabularies_are_fit_on_training_data_only():
    rows = [("u", "seen", "s", 1, 1), ("u", "seen", "s", 2, 1), ("u", "only_in_test", "s", 3, 1),
            ("v", "seen", "s", 1, 1)]
    data = build_prepared_data(_log(rows, ["train", "valid", "test", "train"]), "t", 4, "given", 0)
    assert data.vocabularies["item_id"].values == ["seen"]
    assert data.splits["test"].target_item.tolist() == [OOV_INDEX]


@pytest.mark.parametrize("method", ["time", "random"])
def test_split_fractions(method):
    data = prepare_dataset(DataOptions(split=method, synthetic=SyntheticConfig(users=100, events_per_user=20)))
    sizes = {name: len(s) for name, s in data.splits.items()}
    assert sizes == {"train": 1600, "valid": 200, "test": 200}
    if method == "time":
        assert data.splits["train"].timestamp.max() <= data.splits["valid"].timestamp.min()
        assert data.splits["valid"].timestamp.max() <= data.splits["test"].timestamp.min()


def test_random_split_depends_only_on_its_own_seed():
    small = SyntheticConfig(users=50, events_per_user=10)
    a = prepare_dataset(DataOptions(split="random", split_seed=1, synthetic=small))
    b = prepare_dataset(DataOptions(split="random", split_seed=1, synthetic=small))
    c = prepare_dataset(DataOptions(split="random", split_seed=2, synthetic=small))
    assert np.array_equal(a.splits["test"].timestamp, b.splits["test"].timestamp)
    assert not np.array_equal(a.splits["test"].timestamp, c.splits["test"].timestamp)


def test_leave_last_out_puts_each_users_last_time_in_test():
    data = prepare_dataset(DataOptions(split="leave-last-out", synthetic=SyntheticConfig(users=30, events_per_user=10)))
    test = data.splits["test"]
    assert len(set(test.user_id)) == 30 and len(test) == 30


def test_prepared_data_roundtrip(tmp_path):
    data = prepare_dataset(DataOptions(history_length=5, synthetic=SyntheticConfig(users=40, events_per_user=10)))
    data.save(tmp_path)
    loaded = PreparedData.load(tmp_path)
    assert loaded.schema == data.schema
    assert loaded.vocabularies == data.vocabularies
    for name in ("train", "valid", "test"):
        for field, value in data.splits[name].__dict__.items():
            np.testing.assert_array_equal(getattr(loaded.splits[name], field), value, err_msg=field)
