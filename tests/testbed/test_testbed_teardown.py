"""`down` removes exactly what `up` made: after a clean run, a crash mid-`up`, a crash after it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coinfer.testbed import Testbed, make_config
from coinfer.testbed import netns as nt

from testbed_helpers import needs_netns, netns_names, pid_alive, unique_prefix

pytestmark = needs_netns

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]  # bounded, in case cleanup fails


def root_links() -> set[str]:
    return set(nt.list_links())


def assert_nothing_left(prefix: str, state_dir: Path, inodes: list[int], pids: list[int]) -> None:
    assert not [ns for ns in netns_names() if ns.startswith(f"{prefix}-")]
    assert not [p for p in Path("/run/netns").glob(f"{prefix}-*")]
    for ino in inodes:  # no process keeps a namespace (and so its veths and qdiscs) alive
        assert nt.pids_in_namespace_inode(ino) == []
    assert not [pid for pid in pids if pid_alive(pid)]
    assert not (state_dir / f"{prefix}.json").exists()
    assert not list(state_dir.glob(f"{prefix}-relay-*"))


def test_down_removes_namespaces_links_qdiscs_and_processes(tmp_path):
    links_before = root_links()
    config = make_config(2, prefix=unique_prefix(), state_dir=tmp_path, delay_ms=[10, 0], uplink_mbit=[4])
    tb = Testbed.up(config)
    inodes = [ino for ns in config.namespaces if (ino := nt.namespace_inode(ns))]
    assert len(inodes) == 3
    tb.reach_server(0, 7100)
    sleeper = tb.exec_in(1, SLEEPER)
    pids = [sleeper.pid] + [r.pid for r in tb.status().relays]
    assert nt.qdisc_kinds(tb.namespace(0), "eth0")[0] == "htb"

    report = tb.down()
    sleeper.wait(timeout=10)
    assert sorted(report.namespaces_removed) == sorted(config.namespaces)
    assert sleeper.pid in report.processes_stopped
    assert report.state_file_removed
    assert_nothing_left(config.prefix, tmp_path, inodes, pids)
    assert root_links() == links_before  # nothing was ever made on the host itself
    # Idempotent: a second down finds nothing and says so.
    again = tb.down()
    assert again.namespaces_removed == [] and not again.state_file_removed


CRASH_MID_UP = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from coinfer.testbed import Testbed, make_config, netns

    crash_at, calls, real_run = int(sys.argv[3]), [0], netns.run

    def dying_run(argv, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no except, no finally, no atexit
        return real_run(argv, **kwargs)

    netns.run = dying_run
    Testbed.up(make_config(2, prefix=sys.argv[1], state_dir=Path(sys.argv[2])))
""")


@pytest.mark.parametrize("crash_at", [3, 9, 21, 27])
def test_down_after_a_crash_in_the_middle_of_up(tmp_path, crash_at):
    prefix = unique_prefix()
    proc = subprocess.run([sys.executable, "-c", CRASH_MID_UP, prefix, str(tmp_path), str(crash_at)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = [ns for ns in netns_names() if ns.startswith(f"{prefix}-")]
    assert left, "the simulated crash should leave namespaces behind"
    assert (tmp_path / f"{prefix}.json").exists()  # the intent was recorded before anything was made

    report = Testbed.teardown(prefix, tmp_path)
    assert sorted(report.namespaces_removed) == sorted(left)
    assert_nothing_left(prefix, tmp_path, [], [])


CRASH_AFTER_UP = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from coinfer.testbed import Testbed, make_config

    tb = Testbed.up(make_config(2, prefix=sys.argv[1], state_dir=Path(sys.argv[2]), delay_ms=[10, 0]))
    tb.reach_server(0, 7101)
    sleeper = tb.exec_in(1, [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    print(json.dumps({"pids": [sleeper.pid] + [r.pid for r in tb.status().relays]}), flush=True)
    sys.stdin.read()  # wait to be killed
""")


def test_down_after_a_crash_with_processes_still_running(tmp_path):
    prefix = unique_prefix()
    proc = subprocess.Popen([sys.executable, "-c", CRASH_AFTER_UP, prefix, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(timeout=10)
    inodes = [ino for ns in netns_names() if ns.startswith(f"{prefix}-") and (ino := nt.namespace_inode(ns))]
    assert len(inodes) == 3
    assert all(pid_alive(pid) for pid in started["pids"])  # orphans of the crashed process

    report = Testbed.teardown(prefix, tmp_path)
    assert set(started["pids"]) <= set(report.processes_stopped)
    assert_nothing_left(prefix, tmp_path, inodes, started["pids"])


def test_down_without_a_state_file_removes_only_matching_leftovers(tmp_path):
    prefix = unique_prefix()
    ours, other = f"{prefix}-d5", f"{prefix}x-srv"  # the second only looks similar
    subprocess.run(["ip", "netns", "add", ours], check=True)
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        assert Testbed.inspect(prefix, tmp_path).leftovers == [ours]
        report = Testbed.teardown(prefix, tmp_path)
        assert report.namespaces_removed == [ours]
        assert not report.state_file_removed
        names = netns_names()
        assert ours not in names and other in names
    finally:
        subprocess.run(["ip", "netns", "delete", other], check=False)
        subprocess.run(["ip", "netns", "delete", ours], check=False)

