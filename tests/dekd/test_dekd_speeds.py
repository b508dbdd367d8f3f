import json

import pytest

from coinfer.core.errors import InvalidInput
from coinfer.core.profile import load_profile
from coinfer.server.dekd.speeds import parse_device_speeds


def test_numbers_are_normalised_to_the_fastest():
    assert parse_device_speeds("2,2,1,1", 4) == [1.0, 1.0, 0.5, 0.5]
    assert parse_device_speeds(None, 3) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("text", ["1,0,1,1", "1,-2,1,1", "1,inf,1,1", "1,nan,1,1", "1,,1,1", "a,b,c,d"])
def test_non_positive_or_unreadable_speeds_are_refused(text):
    with pytest.raises(InvalidInput, match="speed"):
        parse_device_speeds(text, 4)


def test_the_count_must_match_the_devices():
    with pytest.raises(InvalidInput, match="3 speed"):
        parse_device_speeds("1,1,1", 4)


def test_profiles_give_inverse_local_latency(tmp_path):
    fast, slow = load_profile("jetson-nano-mobilenetv2"), load_profile("jetson-nano-vgg11")
    speeds = parse_device_speeds("jetson-nano-mobilenetv2,jetson-nano-vgg11", 2)
    expected = (1 / slow.local_latency_s) / (1 / fast.local_latency_s)
    assert max(speeds) == 1.0 and min(speeds) == pytest.approx(min(expected, 1 / expected))
    # one JSON file holding several profiles
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"devices": [fast.to_dict(), slow.to_dict(), fast.to_dict()]}))
    assert parse_device_speeds(str(path), 3) == pytest.approx([speeds[0], speeds[1], speeds[0]])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"schema": "nope"}]))
    with pytest.raises(InvalidInput, match="schema"):
        parse_device_speeds(str(bad), 1)
