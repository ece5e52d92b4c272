#!/usr/bin/env python3
"""Consistency checks of the deployment files, run by scripts/check-deploy.sh.

What the schema validator (kubernetes-validate) cannot see: that the files agree with each
other and with the tessera binary. Each check prints "ok - ..." or "FAIL - ..."; the exit
code is the number of failures (capped at 100).

  deploy_checks.py kubernetes TESSERA_BINARY          manifests: references, selectors, flags
  deploy_checks.py units TESSERA_BINARY UNIT...       systemd units: ExecStart flags, defaults
  deploy_checks.py dockerfile                         Dockerfile: COPY sources, packages, build
  deploy_checks.py execstart UNIT KEY=VALUE...        print a unit's ExecStart argv, expanded
  deploy_checks.py healthcheck                        print the HEALTHCHECK argv (port: $TESSERA_PORT)
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# Secrets the operator creates (deploy/README.md says how); manifests only refer to them.
EXTERNAL_SECRETS = {"tessera-postgres", "tessera-api-tokens"}

failures = 0


def report(ok: bool, message: str) -> None:
    global failures
    print(("ok - " if ok else "FAIL - ") + message)
    if not ok:
        failures += 1


# ---------------------------------------------------------------------------------------------
# The binary's command line, from its own --help

_help_cache: dict[str, tuple[set[str], int]] = {}


def cli(binary: str, subcommand: str) -> tuple[set[str], int]:
    """The long options of `tessera SUBCOMMAND` and its number of positional arguments."""
    if subcommand not in _help_cache:
        result = subprocess.run([binary, subcommand, "--help"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise SystemExit(f"{binary} {subcommand} --help failed: {result.stderr}")
        usage = result.stdout.split("USAGE:", 1)[1].split("\n\n", 1)[0]
        options = set(re.findall(r"(--[a-z][a-z0-9-]*)", result.stdout))
        positionals = len(re.findall(r"(?<![\[-])<[a-z-]+>(?!\])", re.sub(r"\[[^\]]*\]", "", usage)))
        _help_cache[subcommand] = (options, positionals)
    return _help_cache[subcommand]


def check_command_line(binary: str, argv: list[str], where: str) -> None:
    """argv = [subcommand, args...]: the subcommand exists and every --flag is one of its options."""
    if not argv:
        report(False, f"{where}: no tessera subcommand")
        return
    subcommand = argv[0]
    options, _ = cli(binary, subcommand)
    flags = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
    unknown = [f for f in flags if f not in options]
    report(not unknown, f"{where}: `tessera {subcommand}` accepts {', '.join(flags) or 'no flags'}"
           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_documents(path: Path) -> list[dict]:
    with path.open() as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def pod_specs(document: dict) -> list[tuple[str, dict, dict]]:
    """(name, pod template metadata, pod spec) of a workload."""
    kind = document.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        template = document["spec"]["template"]
        return [(f"{kind}/{document['metadata']['name']}", template.get("metadata", {}), template["spec"])]
    return []


def check_kubernetes(binary: str) -> None:
    variants = sorted(p for p in KUBERNETES.iterdir() if p.is_dir())
    report(len(variants) >= 2, f"kubernetes: variants {[v.name for v in variants]}")
    for variant in variants:
        check_variant(variant, binary)


def check_variant(variant: Path, binary: str) -> None:
    name = variant.name
    kustomization = yaml.safe_load((variant / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    files = sorted(p.name for p in variant.glob("*.yaml") if p.name != "kustomization.yaml")
    report(sorted(listed) == files, f"{name}: kustomization.yaml lists every manifest ({', '.join(files)})")

    documents = []
    for file in files:
        for document in load_documents(variant / file):
            for key in ("apiVersion", "kind", "metadata"):
                if key not in document:
                    report(False, f"{name}/{file}: a document without {key}")
            documents.append(document)
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    names = [(d["kind"], d["metadata"]["name"]) for d in documents]
    report(len(names) == len(set(names)), f"{name}: {len(documents)} resources, no duplicate kind/name")

    config_maps = by_kind.get("ConfigMap", {})
    claims = set(by_kind.get("PersistentVolumeClaim", {}))
    workloads = [spec for d in documents for spec in pod_specs(d)]
    report(bool(workloads), f"{name}: has workloads ({', '.join(w[0] for w in workloads)})")

    for workload, metadata, spec in workloads:
        labels = metadata.get("labels", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                report(claim in claims, f"{name}: {workload} volume {volume['name']} -> PVC {claim} is defined")
        templates = {t["metadata"]["name"] for t in
                     next((d for d in documents if f"{d['kind']}/{d['metadata']['name']}" == workload), {})
                     .get("spec", {}).get("volumeClaimTemplates", [])}
        for container in spec.get("containers", []):
            where = f"{name}: {workload} container {container['name']}"
            defined: set[str] = set()
            for source in container.get("envFrom", []):
                reference = source.get("configMapRef", {}).get("name")
                if reference:
                    report(reference in config_maps, f"{where}: envFrom ConfigMap {reference} is defined")
                    defined |= set(config_maps.get(reference, {}).get("data", {}))
            for variable in container.get("env", []):
                defined.add(variable["name"])
                secret = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    report(secret["name"] in EXTERNAL_SECRETS or secret["name"] in by_kind.get("Secret", {}),
                           f"{where}: Secret {secret['name']} is defined or documented as created by the operator")
            referenced = set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", " ".join(container.get("args", []) + container.get("command", []))))
            undefined = referenced - defined
            report(not undefined, f"{where}: every $(VAR) in args is defined"
                   + (f" (undefined: {', '.join(sorted(undefined))})" if undefined else ""))
            for mount in container.get("volumeMounts", []):
                report(mount["name"] in volumes or mount["name"] in templates,
                       f"{where}: volumeMount {mount['name']} has a volume")
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if probe and "httpGet" in probe:
                    port = probe["httpGet"]["port"]
                    report(isinstance(port, int) or port in ports, f"{where}: {probe_name} port {port} is a container port")
            if container["image"].split(":")[0] == "tessera":
                security = container.get("securityContext", {})
                pod_security = spec.get("securityContext", {})
                report(pod_security.get("runAsNonRoot") is True and security.get("allowPrivilegeEscalation") is False,
                       f"{where}: runs as non-root without privilege escalation")
                limits = container.get("resources", {}).get("limits", {})
                report("memory" in limits, f"{where}: has a memory limit")
                args = [a for a in container.get("args", [])]
                check_command_line(binary, args, where)
                if args and args[0] == "serve":
                    report(all(container.get(p) for p in ("livenessProbe", "readinessProbe")),
                           f"{where}: serve has liveness and readiness probes")
                    report("--host=0.0.0.0" in args, f"{where}: serve listens on all interfaces of the pod")
                if args and args[0] in {"serve", "watch", "run"}:
                    report(any(a.startswith("--threads") for a in args) or args[:2] == ["serve", "--workers=0"]
                           or "--workers=0" in args,
                           f"{where}: cores set with --threads (else it takes the node's, not its limit)")
    # Services select pods that exist and target named ports they have.
    for service_name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector", {})
        matches = [w for w, metadata, _ in workloads
                   if all(metadata.get("labels", {}).get(k) == v for k, v in selector.items())]
        report(len(matches) >= 1, f"{name}: Service {service_name} selects {', '.join(matches) or 'nothing'}")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str):
                ok = any(target in {p.get("name") for c in spec.get("containers", []) for p in c.get("ports", [])}
                         for w, _, spec in workloads if w in matches)
                report(ok, f"{name}: Service {service_name} targetPort {target} is a port of the selected pods")
    # Deployment selectors match their own templates.
    for kind in ("Deployment", "StatefulSet"):
        for workload_name, workload in by_kind.get(kind, {}).items():
            selector = workload["spec"]["selector"]["matchLabels"]
            labels = workload["spec"]["template"]["metadata"]["labels"]
            report(all(labels.get(k) == v for k, v in selector.items()),
                   f"{name}: {kind}/{workload_name} selector matches its pod labels")
    if name == "single-node":
        deployment = next(iter(by_kind.get("Deployment", {}).values()))
        report(deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate",
               f"{name}: one replica, Recreate (SQLite has one writer)")
        modes = {c["metadata"]["name"]: c["spec"]["accessModes"] for c in by_kind["PersistentVolumeClaim"].values()}
        report(all(m == ["ReadWriteOnce"] for m in modes.values()), f"{name}: SQLite data on ReadWriteOnce {modes}")
    if name == "scale-out":
        queue = next(iter(config_maps.values()))["data"].get("TESSERA_QUEUE", "")
        report(queue.startswith("postgres://") and "@" in queue and ":" not in queue.split("//", 1)[1].split("@", 1)[0],
               f"{name}: TESSERA_QUEUE is a postgres:// URL without a password ({queue})")
        shared = by_kind["PersistentVolumeClaim"].get("tessera-shared", {})
        report(shared.get("spec", {}).get("accessModes") == ["ReadWriteMany"], f"{name}: slides on a ReadWriteMany volume")
        workers = by_kind["Deployment"].get("tessera-worker", {})
        report(workers.get("spec", {}).get("replicas", 0) >= 2, f"{name}: several worker replicas")
        mounts = {m["mountPath"] for _, _, spec in workloads for c in spec["containers"]
                  for m in c.get("volumeMounts", []) if m["name"] == "shared"}
        report(mounts == {"/shared"}, f"{name}: the shared volume has one mount path in every pod ({mounts})")


# ---------------------------------------------------------------------------------------------
# systemd units


def unit_service_section(path: Path) -> list[tuple[str, str]]:
    pairs, section = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def exec_start(path: Path, overrides: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: ${VAR} is one word, $VAR splits at whitespace."""
    pairs = unit_service_section(path)
    environment = {}
    for key, value in pairs:
        if key == "Environment":
            for assignment in shlex.split(value):
                k, v = assignment.split("=", 1)
                environment[k] = v
    environment.update(overrides)
    command = next(v for k, v in pairs if k == "ExecStart")
    argv: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += environment.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: environment.get(m.group(1), ""), word))
    return argv


def check_units(binary: str, units: list[str]) -> None:
    example = ROOT / "deploy" / "systemd" / "tessera.env.example"
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example.read_text(), re.M))
    for unit in map(Path, units):
        pairs = unit_service_section(unit)
        keys = {k for k, _ in pairs}
        argv = exec_start(unit, {})
        report(argv[0] == "/usr/bin/tessera", f"{unit.name}: ExecStart runs /usr/bin/tessera (where the package installs it)")
        check_command_line(binary, argv[1:], unit.name)
        # Every ${VAR} has a default in the unit, so a missing env file still gives a valid command.
        command = next(v for k, v in pairs if k == "ExecStart")
        variables = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", command))
        defaults = {a.split("=", 1)[0] for k, v in pairs if k == "Environment" for a in shlex.split(v)}
        report(variables <= defaults, f"{unit.name}: every variable of ExecStart has a default in the unit"
               + (f" (missing: {sorted(variables - defaults)})" if not variables <= defaults else ""))
        undocumented = {v for v in variables if v.startswith("TESSERA_")} - documented
        report(not undocumented, f"{unit.name}: every TESSERA_ variable it uses is in tessera.env.example"
               + (f" (missing: {sorted(undocumented)})" if undocumented else ""))
        wanted = {"ProtectSystem", "PrivateTmp", "NoNewPrivileges", "MemoryMax", "ProtectHome"}
        report(wanted <= keys, f"{unit.name}: hardening {sorted(wanted)} present")
        report(("User" in keys) != ("DynamicUser" in keys), f"{unit.name}: runs as a dedicated or dynamic user")
        report("StateDirectory" in keys or "ReadWritePaths" in keys, f"{unit.name}: writable paths declared")


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    result, stage = [], "?"
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage = arguments.split(" AS ")[-1].strip() if " AS " in arguments else arguments.strip()
        result.append((stage, instruction, arguments.strip()))
    return result


def apt_packages(command: str) -> list[str]:
    packages = []
    for part in command.split("&&"):
        if "apt-get install" in part:
            packages += [w for w in part.split("install", 1)[1].split() if not w.startswith("-")]
    return packages


def check_dockerfile() -> None:
    instructions = dockerfile_instructions()
    stages = [a for s, i, a in instructions if i == "FROM"]
    report(len(stages) == 2 and "bookworm" in stages[0] and stages[1].startswith("debian:bookworm-slim"),
           f"Dockerfile: two stages, Swift toolchain on Debian 12 then debian:bookworm-slim ({stages})")
    build_runs = " ".join(a for s, i, a in instructions if i == "RUN" and s == "build")
    run_runs = " ".join(a for s, i, a in instructions if i == "RUN" and s != "build")
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    setup_packages = re.search(r"packages=\(([^)]*)\)", setup).group(1).split()
    build_packages = apt_packages(build_runs)
    report(set(setup_packages) <= set(build_packages),
           f"Dockerfile: build stage installs what scripts/setup.sh installs ({' '.join(setup_packages)})")
    package_script = (ROOT / "scripts" / "package.sh").read_text()
    report("scripts/package.sh" in build_runs and "swift build -c release --product tessera --static-swift-stdlib" in package_script,
           "Dockerfile: build stage makes the .deb with scripts/package.sh (swift build -c release --product tessera --static-swift-stdlib)")
    runtime = apt_packages(run_runs)
    copies = [a for s, i, a in instructions if i == "COPY" and s != "build"]
    report(any(a.startswith("--from=build") and a.endswith(".deb /tmp/tessera.deb") for a in copies)
           and runtime == ["/tmp/tessera.deb"],
           f"Dockerfile: run stage installs the package from the build stage and nothing else ({' '.join(runtime)})")
    environment = " ".join(a for s, i, a in instructions if i == "ENV" and s != "build")
    check = next((a for s, i, a in instructions if i == "HEALTHCHECK"), "")
    cmd = json.loads(next(a for s, i, a in instructions if i == "CMD" and s != "build"))
    report("TESSERA_PORT=" in environment and "${TESSERA_PORT" in check and not any(a.startswith("--port") for a in cmd),
           "Dockerfile: serve's port and the HEALTHCHECK both come from TESSERA_PORT")

    ignore = []
    dockerignore = ROOT / ".dockerignore"
    if dockerignore.exists():
        ignore = [l.strip() for l in dockerignore.read_text().splitlines() if l.strip() and not l.startswith("#")]
    for stage, instruction, arguments in instructions:
        if instruction != "COPY" or "--from=" in arguments:
            continue
        sources = shlex.split(arguments)[:-1]
        for source in sources:
            matches = list(ROOT.glob(source))
            ignored = [p for p in ignore if fnmatch.fnmatch(source, p) or source.startswith(p.rstrip("/") + "/")]
            report(bool(matches) and not ignored, f"Dockerfile: COPY {source} exists in the repository"
                   + (" and is not in .dockerignore" if dockerignore.exists() else ""))
    for model in sorted((ROOT / "models").glob("*/model.json")):
        folder = model.parent.relative_to(ROOT)
        sources = [a.split()[:-1] for _, i, a in instructions if i == "COPY" and not a.startswith("--from")]
        shipped = any(src in (f"{folder}/model.onnx", str(folder), f"{folder}/") for srcs in sources for src in srcs)
        report(shipped, f"Dockerfile: ships model {folder.name}")
    for needed in ("USER", "HEALTHCHECK", "VOLUME", "CMD"):
        report(needed in {i for s, i, a in instructions if s != "build"}, f"Dockerfile: run stage has {needed}")
    user = next(a for s, i, a in instructions if i == "USER" and s != "build")
    report(user.split(":")[0].isdigit() and user.split(":")[0] != "0", f"Dockerfile: numeric non-root USER {user}")
    report(cmd[:1] == ["serve"] and "0.0.0.0" in cmd, f"Dockerfile: default command `tessera {' '.join(cmd)}`")


def healthcheck_argv() -> list[str]:
    """The HEALTHCHECK command; it reads the port from TESSERA_PORT, as the image's serve does."""
    check = next(a for s, i, a in dockerfile_instructions() if i == "HEALTHCHECK")
    return json.loads(check[check.index("CMD") + 3:].strip())


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 64
    command = sys.argv[1]
    if command == "kubernetes":
        check_kubernetes(sys.argv[2])
    elif command == "units":
        check_units(sys.argv[2], sys.argv[3:])
    elif command == "dockerfile":
        check_dockerfile()
    elif command == "execstart":
        overrides = dict(a.split("=", 1) for a in sys.argv[3:])
        print("\0".join(exec_start(Path(sys.argv[2]), overrides)), end="")
    elif command == "healthcheck":
        print("\0".join(healthcheck_argv()), end="")
    else:
        print(__doc__)
        return 64
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main())
