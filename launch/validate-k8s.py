"""Checks the Kubernetes manifests beyond schema validation (kubernetes-validate checks neither
enums nor CRDs): rank counts agree, rank 0's address matches the Job and Service, ports line up,
the wave-dist flags exist, and the embedded job config is accepted by the binary.

    python launch/validate-k8s.py k8s/*.yaml      # needs PyYAML and WAVE_DIST_BIN
"""

import os
import subprocess
import sys
import tempfile

import yaml

BIN = os.environ.get("WAVE_DIST_BIN", "wave-dist")
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_command(where, command):
    """The wave-dist train flags used must be ones `wave-dist train --help` lists."""
    if "wave-dist" not in command:
        return
    args = command[command.index("wave-dist") + 1:]
    check(args[:1] == ["train"], f"{where}: expected `wave-dist train`, got {args[:1]}")
    help_text = subprocess.run([BIN, "train", "--help"], capture_output=True, text=True).stdout
    for flag in (a for a in args if a.startswith("--")):
        check(flag in help_text, f"{where}: `wave-dist train --help` has no {flag}")


def check_config(where, toml_text):
    """The job config must load: pointing data.uri at nothing, the error must be about the data."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    missing = "/nonexistent/k8s-config-check"
    out = subprocess.run([BIN, "train", "--config", f.name, "--device", "cpu", "--backend", "local",
                          "--set", f'data.uri="{missing}"'], capture_output=True, text=True,
                         env=dict(os.environ, WAVE_WORLD_SIZE="1"))
    os.unlink(f.name)
    check(out.returncode != 0 and missing in out.stderr and "config:" not in out.stderr,
          f"{where}: the job config does not load: {out.stderr.strip()[-400:]}")


def main(paths):
    docs = [d for p in paths for d in yaml.safe_load_all(open(p)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configs = {c["metadata"]["name"]: c["data"] for c in by_kind.get("ConfigMap", [])}
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}

    for job in by_kind.get("Job", []):
        name, spec = job["metadata"]["name"], job["spec"]
        pod = spec["template"]["spec"]
        (c,) = pod["containers"]
        env = env_of(c)
        world = int(env.get("WAVE_WORLD_SIZE", 0))
        check(spec.get("completionMode") == "Indexed", f"Job {name}: completionMode must be Indexed")
        check(spec["completions"] == spec["parallelism"] == world,
              f"Job {name}: completions {spec['completions']}, parallelism {spec['parallelism']} and WAVE_WORLD_SIZE {world} must agree")
        sub = pod.get("subdomain")
        svc = services.get(sub)
        check(svc is not None, f"Job {name}: subdomain {sub!r} has no headless Service")
        if svc:
            check(svc["spec"].get("clusterIP") == "None", f"Service {sub}: must be headless (clusterIP: None)")
            check(svc["spec"]["selector"].get("job-name") == name, f"Service {sub}: selector must match job-name={name}")
            ports = {p["port"] for p in svc["spec"]["ports"]}
            check(int(env.get("MASTER_PORT", 0)) in ports, f"Job {name}: MASTER_PORT not served by Service {sub}")
        check(env.get("MASTER_ADDR") == f"{name}-0.{sub}", f"Job {name}: MASTER_ADDR must be {name}-0.{sub} (rank 0's pod)")
        check(int(env.get("MASTER_PORT", 0)) in {p["containerPort"] for p in c.get("ports", [])},
              f"Job {name}: MASTER_PORT is not a container port")
        check(str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) == "1",
              f"Job {name}: one GPU per rank (NCCL allows one rank per GPU)")
        check_command(f"Job {name}", c["command"])
        for v in pod.get("volumes", []):
            if "configMap" in v:
                check_config(f"Job {name}", configs[v["configMap"]["name"]]["job.toml"])

    for mj in by_kind.get("MPIJob", []):
        name, spec = mj["metadata"]["name"], mj["spec"]
        (launcher,) = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
        worker = spec["mpiReplicaSpecs"]["Worker"]
        cmd = launcher["command"]
        slots = spec.get("slotsPerWorker", 1) * worker["replicas"]
        check(cmd[0] == "mpirun" and int(cmd[cmd.index("-n") + 1]) == slots,
              f"MPIJob {name}: mpirun -n must equal Worker replicas x slotsPerWorker = {slots}")
        check_command(f"MPIJob {name}", cmd)
        for v in worker["template"]["spec"].get("volumes", []):
            if "configMap" in v:
                check_config(f"MPIJob {name}", configs[v["configMap"]["name"]]["job.toml"])

    for p in problems:
        print(f"k8s: {p}", file=sys.stderr)
    print(f"k8s: {len(docs)} documents checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
