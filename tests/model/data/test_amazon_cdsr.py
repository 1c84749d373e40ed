from pathlib import Path

import numpy as np
import pytest

from model.data.amazon_cdsr import load_amazon_cdsr, read_sequences, scenario_names
from model.data.datasets import DataOptions, prepare_dataset


def write_cdsr_folder(root: Path, name: str = "Movie-Book") -> Path:
    """A tiny folder in the C2DSR format: 6 domain-A items, 5 domain-B items, 3 users."""
    folder = root / name
    folder.mkdir()
    (folder / "Alist.txt").write_text("".join(f"{100 + i}\tA{i:03d}\t{i}\n" for i in range(6)))
    (folder / "Blist.txt").write_text("".join(f"{200 + i}\tB{i:03d}\t{i}\n" for i in range(5)))
    (folder / "userlist.txt").write_text("ux\t0\nuy\t1\nuz\t2\n")
    # Item numbers >= 6 are domain B. User 0 lists a same-day pair out of time order on purpose.
    (folder / "validdata_new.txt").write_text(
        "0\t5\t1|300|d|\t6|100|d|\t2|200|d|\t7|200|d|\n"
        "1\t6\t3|100|d|\t8|150|d|\t4|160|d|\n")
    (folder / "testdata_new.txt").write_text("2\t7\t0|10|d|\t9|20|d|\t5|30|d|\t10|40|d|\n")
    return folder


def test_reads_any_folder_of_the_format(tmp_path):
    folder = write_cdsr_folder(tmp_path)
    assert scenario_names(folder) == ("movie", "book")
    assert len(read_sequences(folder)) == 11
    log = load_amazon_cdsr(folder, negatives_per_positive=2, negative_seed=0)
    frame = log.frame
    assert set(frame.scenario) == {"movie", "book"}
    positives = frame[frame.label == 1]
    assert len(positives) == 11 and len(frame) == 33
    # Scenario comes from the item-index range; raw ids are the ASINs.
    assert (positives.scenario == np.where(positives.item_id.str.startswith("A"), "movie", "book")).all()
    # Negatives: same scenario pool as their positive, never touched by the user.
    touched = positives.groupby("user_id").item_id.agg(set)
    negatives = frame[frame.label == 0]
    assert all(item not in touched[user] for user, item in zip(negatives.user_id, negatives.item_id))
    assert (negatives.item_id.str[0] == np.where(negatives.scenario == "movie", "A", "B")).all()


def test_leave_last_out_and_negatives_share_their_positives_history(tmp_path):
    folder = write_cdsr_folder(tmp_path)
    data = prepare_dataset(DataOptions(dataset="amazon-cdsr", data_dir=str(folder), negatives_per_positive=2))
    test = data.splits["test"]
    assert len(test) == 3 * 3 and test.label.sum() == 3            # one positive + 2 negatives per user
    decode = data.vocabularies["item_id"].decode
    for split in data.splits.values():
        for start in range(0, len(split), 3):                       # negatives precede their positive
            group = slice(start, start + 3)
            assert split.label[group].tolist() == [0, 0, 1]
            assert (split.hist_items[group] == split.hist_items[start]).all()
            assert split.target_item[start + 2] not in split.hist_items[start + 2]
    # User ux in time order: B000 (t=100), then A002 and B001 tied at t=200 in file order, then
    # A001 (t=300, test). B001 is ux's validation event, unseen in training, hence OOV.
    row = np.flatnonzero(test.user_id == "ux")[0]
    items, scenarios = test.hist_items[row], test.hist_scenarios[row]
    assert list(decode(items[items != 0])) == ["B000", "A002", "<oov>"]
    assert list(data.vocabularies["scenario"].decode(scenarios[items != 0])) == ["book", "movie", "book"]


def test_negative_sampling_is_reproducible(tmp_path):
    folder = write_cdsr_folder(tmp_path)
    a = load_amazon_cdsr(folder, negative_seed=3).frame
    b = load_amazon_cdsr(folder, negative_seed=3).frame
    assert a.equals(b)


@pytest.mark.real_data
def test_food_kitchen_statistics(amazon_dir):
    log = load_amazon_cdsr(amazon_dir, negatives_per_positive=4)
    positives = log.frame[log.frame.label == 1]
    assert len(positives) == 163_234 and positives.user_id.nunique() == 16_579
    assert len(log.frame) == 5 * 163_234
    assert set(log.frame.scenario) == {"food", "kitchen"}
    assert (log.frame[log.frame.split == "test"].label.sum()) == 16_579
