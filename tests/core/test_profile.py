import json

import pytest

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.profile import builtin_profile_names, load_profile


def test_builtin_paper_profiles_match_the_paper_table():
    table = json.load(open(__import__("pathlib").Path(__file__).parents[2] / "core/profiles/jetson-nano-resnet18.json"))
    assert set(builtin_profile_names()) >= {"jetson-nano-resnet18", "jetson-nano-vgg11", "jetson-nano-mobilenetv2"}
    for name in builtin_profile_names():
        p = load_profile(name)
        assert p.num_points == 6 and p.energy_source == "paper"
        assert p.points[0].head_latency_s == 0 and p.points[-1].uplink_bits == 0
        for pt in p.points[1:-1]:
            # energy = power x time in the paper's table (rounded to 6 decimals)
            assert pt.head_energy_j == pytest.approx(pt.head_power_w * pt.head_latency_s, abs=2e-6)
            assert pt.compression >= 32
    r18 = load_profile("jetson-nano-resnet18")
    assert r18.local_latency_s == table["points"][-1]["head_latency_s"]


def test_profile_file_round_trip_and_errors(tmp_path):
    p = load_profile("jetson-nano-vgg11")
    p.save(tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == p
    data = json.loads((tmp_path / "p.json").read_text())
    del data["points"][2]["uplink_bits"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match=r"points\[2\] is missing field 'uplink_bits'"):
        load_profile(tmp_path / "bad.json")
    data = json.loads((tmp_path / "p.json").read_text())
    data["points"][1]["head_latency_s"] = -1
    (tmp_path / "neg.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match="head_latency_s"):
        load_profile(tmp_path / "neg.json")
    with pytest.raises(NotFound, match="built-in"):
        load_profile("no-such-profile")
