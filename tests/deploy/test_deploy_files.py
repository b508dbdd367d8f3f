"""The deployment files use only commands, flags and ports that exist, so they cannot rot silently.

Every `coinfer` command line in deploy/ (Dockerfile, compose, Kubernetes, systemd) is parsed by
the real CLI parser; the ports each file exposes must be the ports its command listens on; the
files it names must be mounted; the addresses devices dial must be served.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from coinfer.cli import build_parser

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

PATH_FLAGS = ("--bundle", "--cache-dir", "--tls-cert", "--tls-key", "--tls-client-ca", "--coordinator-ca", "--token-file")


@dataclass
class Invocation:
    """One `coinfer` command line found in a deployment file."""

    where: str
    argv: list[str]


def _cli_flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices[command]._option_string_actions)


def parse(inv: Invocation):
    """The namespace the real parser makes of ``inv.argv``; fails the test naming the file on error."""
    assert inv.argv and not inv.argv[0].startswith("-"), f"{inv.where}: no coinfer subcommand in {inv.argv}"
    known = _cli_flags(inv.argv[0])
    for token in inv.argv:
        # Exact names only: argparse would also take an abbreviation, which breaks when a flag is added.
        if token.startswith("--") and token.split("=", 1)[0] not in known:
            pytest.fail(f"{inv.where}: `coinfer {inv.argv[0]}` has no flag {token}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(inv.argv)
    except SystemExit:
        pytest.fail(f"{inv.where}: `coinfer {shlex.join(inv.argv)}` is rejected by the CLI:\n{err.getvalue()}")


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def served_ports(inv: Invocation) -> set[int]:
    """The ports the command listens on: --listen and --metrics-port."""
    args = parse(inv)
    return {int(args.listen.rpartition(":")[2])} | ({args.metrics_port} if args.metrics_port else set())


def assert_reachable_and_allowed(inv: Invocation) -> None:
    """In a container or on a device the daemon must listen on all addresses, with TLS or --insecure."""
    args = parse(inv)
    assert args.listen.startswith("0.0.0.0:"), f"{inv.where}: --listen {args.listen} is not reachable from outside"
    assert args.tls_cert or args.insecure, f"{inv.where}: plaintext on a public address needs --insecure"


# Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_dockerfile_entrypoint_is_the_cli():
    d = dockerfile()
    assert d["FROM"] == ["python:3.11-slim"]
    assert json.loads(d["ENTRYPOINT"][-1]) == ["coinfer"]
    cmd = json.loads(d["CMD"][-1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(cmd)
    assert exit_info.value.code == 0, f"Dockerfile CMD {cmd} is rejected"
    assert any("download.pytorch.org/whl/cpu" in run for run in d["ARG"] + d["RUN"])


def test_dockerfile_exposes_the_ports_the_daemons_use():
    exposed = {int(p) for line in dockerfile()["EXPOSE"] for p in line.split()}
    used = set().union(*(served_ports(inv) for inv in compose_invocations().values()))
    assert exposed == used, f"Dockerfile EXPOSE {sorted(exposed)}, but the daemons serve {sorted(used)}"


# Compose --------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_invocations() -> dict[str, Invocation]:
    return {name: Invocation(f"compose.yaml service {name}", [str(t) for t in svc["command"]])
            for name, svc in compose()["services"].items()}


def test_compose_commands_parse_and_publish_what_they_serve():
    services = compose()["services"]
    assert {inv.argv[0] for inv in compose_invocations().values()} == {"serve", "edge"}
    for name, inv in compose_invocations().items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert_reachable_and_allowed(inv)
        published = {int(str(p).rsplit(":", 1)[1]) for p in svc["ports"]}
        assert published == served_ports(inv), f"{name}: publishes {published}, serves {served_ports(inv)}"
    host_ports = [str(p).rsplit(":", 1)[0] for svc in services.values() for p in svc["ports"]]
    assert len(host_ports) == len(set(host_ports)), "two services publish one host port"


def test_compose_edges_dial_the_coordinator_and_are_distinct():
    invs = compose_invocations()
    serving = {name: parse(inv).listen.rpartition(":")[2] for name, inv in invs.items() if inv.argv[0] == "serve"}
    edges = {name: parse(inv) for name, inv in invs.items() if inv.argv[0] == "edge"}
    assert len(edges) >= 2
    for name, args in edges.items():
        host, _, port = args.coordinator.rpartition(":")
        assert serving.get(host) == port, f"{name} dials {args.coordinator}, which no service serves"
        assert args.advertise == f"{name}:{args.listen.rpartition(':')[2]}", f"{name} advertises {args.advertise}"
    assert len({args.name for args in edges.values()}) == len(edges)


# Kubernetes -----------------------------------------------------------------------------------


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def workloads() -> list[dict]:
    return [d for d in k8s_documents() if d["kind"] in ("Deployment", "DaemonSet")]


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_k8s_workloads_parse_expose_mount_and_annotate():
    assert {w["kind"] for w in workloads()} == {"Deployment", "DaemonSet"}
    for w in workloads():
        pod = w["spec"]["template"]
        assert w["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for c in pod["spec"]["containers"]:
            where = f"{w['kind']} {w['metadata']['name']} container {c['name']}"
            assert c.get("command") in (None, ["coinfer"]), f"{where}: the image's entrypoint must run"
            inv = Invocation(where, [str(a) for a in c["args"]])
            assert_reachable_and_allowed(inv)
            declared = {p["containerPort"] for p in c["ports"]}
            assert declared == served_ports(inv), f"{where}: ports {declared}, serves {served_ports(inv)}"

            annotations = pod["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            metrics_port = str(parse(inv).metrics_port)
            assert annotations["prometheus.io/port"] == metrics_port, f"{where}: scraped port is not {metrics_port}"

            # $(VAR) in args is Kubernetes' substitution: each must be defined in env.
            env = {e["name"] for e in c.get("env", [])}
            for var in re.findall(r"\$\((\w+)\)", " ".join(inv.argv)):
                assert var in env, f"{where}: $({var}) is not defined in env"

            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            for flag in PATH_FLAGS:
                path = flag_value(inv.argv, flag)
                if path is None:
                    continue
                mount = next((mp for mp in mounts if path == mp or path.startswith(mp + "/")), None)
                assert mount, f"{where}: {flag} {path} is not under any volume mount"
                if flag.startswith("--tls") or flag == "--coordinator-ca":
                    assert "secret" in volumes[mounts[mount]], f"{where}: {flag} must come from a Secret"


def test_k8s_edges_run_on_edge_nodes_and_reach_the_coordinator_service():
    (daemonset,) = [w for w in workloads() if w["kind"] == "DaemonSet"]
    assert daemonset["spec"]["template"]["spec"]["nodeSelector"] == {"coinfer.io/role": "edge"}
    services = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Service"}
    (deployment,) = [w for w in workloads() if w["kind"] == "Deployment"]
    coordinator_container = deployment["spec"]["template"]["spec"]["containers"][0]
    named_ports = {p["name"]: p["containerPort"] for p in coordinator_container["ports"]}

    edge = daemonset["spec"]["template"]["spec"]["containers"][0]
    host, _, port = parse(Invocation("edge DaemonSet", [str(a) for a in edge["args"]])).coordinator.rpartition(":")
    service = services[host]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    by_port = {p["port"]: p for p in service["spec"]["ports"]}
    assert int(port) in by_port, f"Service {host} has no port {port}"
    target = by_port[int(port)]["targetPort"]
    coordinator = parse(Invocation("coordinator Deployment", [str(a) for a in coordinator_container["args"]]))
    assert named_ports.get(target, target) == int(coordinator.listen.rpartition(":")[2])
    for p in service["spec"]["ports"]:  # every Service port lands on a container port
        assert p["targetPort"] in named_ports or p["targetPort"] in named_ports.values()


# systemd --------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat; backslash continues a line)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def expand_exec(command: str, env: dict[str, str], instance: str) -> list[str]:
    """systemd's expansion: %i, ${VAR} (one word), $VAR alone (split on spaces)."""
    words = []
    for word in shlex.split(command.replace("%i", instance)):
        if re.fullmatch(r"\$\w+", word):
            words += env[word[1:]].split()
            continue
        for var in re.findall(r"\$\{(\w+)\}", word):
            assert var in env, f"${{{var}}} is not set by the example environment file"
        words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    return words


@pytest.mark.parametrize("unit_name, env_name, command", [
    ("coinfer-coordinator.service", "coordinator.env.example", "serve"),
    ("coinfer-edge@.service", "edge.env.example", "edge"),
])
def test_systemd_units_parse_with_their_example_environment(unit_name, env_name, command):
    u = unit(DEPLOY / "systemd" / unit_name)
    env = env_file(DEPLOY / "systemd" / env_name)
    (exec_start,) = u["Service"]["ExecStart"]
    argv = expand_exec(exec_start, env, instance="jetson-01")
    assert argv[0].endswith("/bin/coinfer")
    inv = Invocation(unit_name, argv[1:])
    assert inv.argv[0] == command
    assert_reachable_and_allowed(inv)
    assert parse(inv).tls_cert, f"{unit_name}: devices talk across a real network: TLS"
    if command == "edge":
        assert parse(inv).name == "jetson-01"  # the instance name is the device name
        assert u["Service"]["EnvironmentFile"] == ["/etc/coinfer/edge-%i.env"]
    assert u["Service"]["KillSignal"] == ["SIGTERM"]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


def test_token_environment_variable_is_what_the_cli_reads(monkeypatch):
    from coinfer.serving.cli_options import read_token

    monkeypatch.setenv("COINFER_TOKEN", "t0ken")
    assert read_token(None) == "t0ken"
    files = [p.read_text() for p in DEPLOY.rglob("*") if p.is_file()]
    assert any("COINFER_TOKEN" in text for text in files)
