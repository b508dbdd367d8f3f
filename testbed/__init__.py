"""A multi-device testbed on one Linux host: one network namespace per device, shaped veth links.

`Testbed.up(config)` builds it, `Testbed.attach(prefix)` finds it from another process, and
`coinfer testbed up|down|status|exec` drives it from the shell. Needs root, `ip` and `tc`.
"""

from coinfer.testbed.channel import RadioConfig, radio_from_scenario, uplink_rate_bps
from coinfer.testbed.config import LinkConfig, TestbedConfig, make_config
from coinfer.testbed.netns import missing_requirements
from coinfer.testbed.testbed import DownReport, Endpoint, Testbed, TestbedStatus

__all__ = [
    "DownReport",
    "Endpoint",
    "LinkConfig",
    "RadioConfig",
    "Testbed",
    "TestbedConfig",
    "TestbedStatus",
    "make_config",
    "missing_requirements",
    "radio_from_scenario",
    "uplink_rate_bps",
]
