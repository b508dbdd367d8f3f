"""Thin wrappers over `ip` and `tc`: namespaces, veth pairs, addresses and HTB shaping.

Every call goes through :func:`run`, which names the failed command and its stderr. Commands use
`ip -n NS` / `tc -n NS` so nothing is executed inside a namespace except the tools themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Sequence

from coinfer.core.errors import FailedPrecondition

COMMAND_TIMEOUT_S = 10.0


class NetworkCommandFailed(FailedPrecondition):
    """An `ip` or `tc` command exited non-zero."""


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `ip`/`tc` command; raise NetworkCommandFailed naming it when ``check``."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NetworkCommandFailed(f"`{' '.join(argv)}` did not finish in {COMMAND_TIMEOUT_S:g} s") from None
    if check and done.returncode != 0:
        raise NetworkCommandFailed(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def missing_requirements() -> list[str]:
    """Why a testbed cannot be made here (empty when it can): root, `ip` and `tc`."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root")
    else:
        # Root inside an unprivileged container may still lack what namespaces and tc need.
        caps = _effective_capabilities()
        for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
            if caps is not None and not caps >> bit & 1:
                missing.append(f"root without {name}")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` (iproute2) is not on PATH")
    return missing


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


def _effective_capabilities() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return None


def require_tools() -> None:
    missing = missing_requirements()
    if missing:
        raise FailedPrecondition("the testbed needs root, `ip` and `tc`: " + "; ".join(missing))


# Namespaces -----------------------------------------------------------------------------------


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    # Lines look like "name (id: 3)" or just "name".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def enter_namespace(ns: str) -> None:
    """Move the calling thread (and the threads it starts later) into namespace ``ns``'s network.

    Unlike `ip netns exec`, which also gives the command a mount namespace with the
    namespace's own /sys, this keeps the host's file systems, its cgroups included. Call it
    before any thread is started.
    """
    clone_newnet = 0x40000000
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, clone_newnet)
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, clone_newnet) != 0:
            errno = ctypes.get_errno()
            raise FailedPrecondition(f"cannot enter network namespace {ns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def add_namespace(ns: str) -> None:
    run(["ip", "netns", "add", ns])


def delete_namespace(ns: str) -> None:
    run(["ip", "netns", "delete", ns], check=False)


def namespace_inode(ns: str) -> int | None:
    """The namespace's inode, which identifies it in /proc/<pid>/ns/net; None when it is gone."""
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def namespace_pids(ns: str) -> list[int]:
    done = run(["ip", "netns", "pids", ns], check=False)
    return [int(tok) for tok in done.stdout.split() if tok.isdigit()]


def pids_in_namespace_inode(inode: int) -> list[int]:
    """Processes whose network namespace is ``inode`` (found through /proc, so it works unmounted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if link == f"net:[{inode}]":
            found.append(int(entry))
    return found


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot: with the pid, it names the process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so count from its closing paren.
    return int(text[text.rindex(")") + 2 :].split()[19])


def terminate(pids: Sequence[int], grace_s: float = 3.0) -> list[int]:
    """SIGTERM each pid, wait up to ``grace_s``, then SIGKILL the rest; returns the pids signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    alive = list(signalled)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return signalled


def _alive(pid: int) -> bool:
    try:
        # A zombie child still "exists"; reap it if it is ours so it stops counting.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Links and addresses ---------------------------------------------------------------------------


def add_veth(ns_a: str, iface_a: str, ns_b: str, iface_b: str) -> None:
    """A veth pair created directly inside two namespaces, so no end ever appears on the host."""
    run(["ip", "link", "add", iface_a, "netns", ns_a, "type", "veth", "peer", "name", iface_b, "netns", ns_b])


def add_address(ns: str, iface: str, cidr: str) -> None:
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", iface])


def link_up(ns: str, iface: str) -> None:
    run(["ip", "-n", ns, "link", "set", iface, "up"])


def one_segment_per_packet(ns: str, iface: str) -> bool:
    """Stop TCP handing the veth 64 KiB GSO super-packets; False when the kernel refuses.

    HTB charges a packet after sending it, so one GSO packet larger than the burst leaves at
    line rate and only the next transfer pays: after an idle gap a 30 KB request would cross a
    2 Mbit/s link in a millisecond. With one segment per packet every request pays its own way.
    """
    return run(["ip", "-n", ns, "link", "set", iface, "gso_max_segs", "1"], check=False).returncode == 0


def add_default_route(ns: str, via: str) -> None:
    run(["ip", "-n", ns, "route", "add", "default", "via", via])


def list_links(ns: str | None = None) -> list[str]:
    argv = ["ip", "-o", "link", "show"] if ns is None else ["ip", "-n", ns, "-o", "link", "show"]
    out = run(argv, check=False).stdout
    # "2: eth0@if3: <...>" -> "eth0"
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


# Shaping ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impairment:
    """netem's share of a link: delay and loss in one direction."""

    delay_ms: float
    loss_pct: float


def _bits(rate_bps: float) -> str:
    return f"{max(1, int(round(rate_bps)))}bit"


def shape(ns: str, iface: str, rate_bps: float, impairment: Impairment | None = None) -> None:
    """HTB root 1: with one class 1:1 at ``rate_bps`` taking all traffic; netem below it if given.

    HTB rather than TBF because a class rate can be changed in place (:func:`change_rate`)
    without dropping queued packets, and netem attaches under it as the leaf.
    """
    run(["tc", "-n", ns, "qdisc", "replace", "dev", iface, "root", "handle", "1:", "htb", "default", "1"])
    rate = _bits(rate_bps)
    run(["tc", "-n", ns, "class", "replace", "dev", iface, "parent", "1:", "classid", "1:1",
         "htb", "rate", rate, "ceil", rate])
    if impairment is not None:
        argv = ["tc", "-n", ns, "qdisc", "replace", "dev", iface, "parent", "1:1", "handle", "10:",
                "netem", "limit", "100000", "delay", f"{impairment.delay_ms:g}ms"]
        if impairment.loss_pct > 0:
            argv += ["loss", f"{impairment.loss_pct:g}%"]
        run(argv)


def change_rate(ns: str, iface: str, rate_bps: float) -> None:
    rate = _bits(rate_bps)
    run(["tc", "-n", ns, "class", "change", "dev", iface, "parent", "1:", "classid", "1:1",
         "htb", "rate", rate, "ceil", rate])


_RATE_RE = re.compile(r"\brate (\S+)")


def shaped_rate_text(ns: str, iface: str) -> str | None:
    """The live HTB class rate as tc prints it (e.g. '2Mbit'); None when there is none."""
    out = run(["tc", "-n", ns, "class", "show", "dev", iface], check=False).stdout
    match = _RATE_RE.search(out)
    return match.group(1) if match else None


def qdisc_kinds(ns: str, iface: str) -> list[str]:
    out = run(["tc", "-n", ns, "qdisc", "show", "dev", iface], check=False).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("qdisc ")]


def netem_available(ns: str) -> bool:
    """Whether the kernel has the netem qdisc (tried on the namespace's loopback, then removed)."""
    done = run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], check=False)
    if done.returncode != 0:
        return False
    run(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"], check=False)
    return True
