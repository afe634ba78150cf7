"""Gap bridging: a crack seen too faintly to cross the threshold is linked through its valley."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cracksurvey.config import VectorizeConfig
from cracksurvey.errors import ConfigError
from cracksurvey.evaluation.evaluate import crack_layer_skeleton
from cracksurvey.gaps import bridge_gaps


def broken_crack(valley_px: float) -> np.ndarray:
    """Distance map of a horizontal crack on row 40: 0 on its two pieces, ``valley_px`` on the
    10-px gap between them (columns 45-54), rising 1 px per px away from the row."""
    rows = np.abs(np.arange(80) - 40)[:, None].astype(np.float32)
    along = np.zeros(120, np.float32)
    along[45:55] = valley_px
    return np.minimum(rows + along[None, :], 20.0)


FOLLOWING = VectorizeConfig(bridge_valley_px=None)  # the valley limit follows the threshold


def test_the_valley_limit_is_fixed_or_follows_the_threshold():
    assert VectorizeConfig().valley_px(4.25) == 2.0  # the default: 2 px whatever the threshold
    assert FOLLOWING.valley_px(1.5) == 3.0
    assert FOLLOWING.valley_px(0.5) == 2.0
    assert (
        VectorizeConfig(bridge_valley_px=None, bridge_valley_margin_px=0.5).valley_px(4.25) == 4.75
    )
    with pytest.raises(ConfigError):
        VectorizeConfig(bridge_valley_margin_px=-1.0)
    with pytest.raises(ConfigError):
        VectorizeConfig(bridge_valley_px=-1.0)


@pytest.mark.parametrize(
    ("valley", "threshold", "config", "linked"),
    [
        (2.5, 1.5, FOLLOWING, True),  # limit 3.0
        (3.5, 1.5, FOLLOWING, False),
        (2.5, 0.5, FOLLOWING, False),  # limit 2.0
        (1.8, 1.5, VectorizeConfig(), True),  # the default's fixed 2.0
        (2.5, 1.5, VectorizeConfig(), False),
    ],
)
def test_a_gap_is_bridged_when_its_valley_is_within_the_rule(valley, threshold, config, linked):
    distance = broken_crack(valley)
    skeleton = distance == 0  # the centreline of the two pieces
    assert ndimage.label(skeleton, np.ones((3, 3)))[1] == 2
    limit = config.valley_px(threshold)
    bridges, n = bridge_gaps(distance, skeleton, max_gap_px=16, max_valley_px=limit)
    assert n == int(linked)
    if linked:
        assert bridges[40, 45:55].all() and bridges.sum() == 10
    kept, n_layer = crack_layer_skeleton(distance, threshold_px=threshold, vectorize=config)
    assert n_layer == int(linked)
    assert ndimage.label(kept, np.ones((3, 3)))[1] == (1 if linked else 2)


def test_a_gap_longer_than_the_rule_stays_open():
    distance = broken_crack(2.5)
    distance[:, 40:60] = np.maximum(distance[:, 40:60], 2.5)  # a 20-px gap
    skeleton = distance == 0
    _, n = bridge_gaps(distance, skeleton, max_gap_px=16, max_valley_px=3.0)
    assert n == 0
