import numpy as np

from model.metrics import item_popularity


def test_item_popularity_is_the_smoothed_training_click_rate():
    train_items = np.array([2, 2, 2, 3])
    train_labels = np.array([1, 1, 0, 0], dtype=np.float32)
    scores = item_popularity(train_items, train_labels, np.array([2, 3, 7]))
    np.testing.assert_allclose(scores, [3 / 5, 1 / 3, 0.5])     # (clicks + 1) / (shows + 2); unseen: 0.5
