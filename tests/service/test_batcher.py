import numpy as np
import pytest

from service.batcher import width_groups


@pytest.mark.parametrize("widths", [[100] * 8, [50, 500, 60, 480, 55, 120, 1, 1000], [7], list(range(1, 40))])
def test_width_groups_cover_every_request_once_and_bound_the_padding(widths):
    groups = width_groups(widths, slack=1.25)
    assert sorted(i for g in groups for i in g) == list(range(len(widths)))
    for group in groups:
        real = sum(widths[i] for i in group)
        assert max(widths[i] for i in group) * len(group) <= 1.25 * real


def test_equal_widths_stay_in_one_run_and_mixed_ones_split():
    assert width_groups([100] * 8) == [list(range(8))]
    groups = width_groups([50, 500, 55, 480])
    assert groups == [[0, 2], [3, 1]]
    rng = np.random.default_rng(0)
    mixed = rng.integers(50, 501, size=64).tolist()        # the locust mix: padding to the widest would
    padded_once = max(mixed) * len(mixed)                   # compute about 1.8x the real rows
    padded_grouped = sum(max(mixed[i] for i in g) * len(g) for g in width_groups(mixed))
    assert padded_grouped <= 1.25 * sum(mixed) < padded_once
