"""Checks the Kubernetes manifests beyond schema validation (kubernetes-validate checks neither
enums nor CRDs): rank counts agree, rank 0's address matches the Job and Service, ports line up,
the wave-dist flags exist, the config path is mounted, the embedded job config is accepted by the
binary, and the Indexed Job survives pre-emption (grace period for a final save, a failure
policy that restarts pre-empted pods, resume from shared storage). With --image, also against a
built image: the image is the one the manifests name, the commands exist in it, it runs as the
non-root user the pods run as, and the MPIJob's ssh layout (sshAuthMountPath, sshd config, port)
is the image's.

    python launch/validate-k8s.py [--image localhost/wave-dist:latest] k8s/*.yaml
                                  # needs PyYAML, WAVE_DIST_BIN, and podman for --image
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

BIN = os.environ.get("WAVE_DIST_BIN", "wave-dist")
# Seconds a pre-empted rank set needs to agree on a stop and commit a final checkpoint.
MIN_GRACE_S = 60
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


def config_path(command):
    args = command[command.index("wave-dist") + 1:] if "wave-dist" in command else []
    return args[args.index("--config") + 1] if "--config" in args[:-1] else None


def check_mounted(where, path, container, volumes, configs):
    """`path` must lie in a volumeMount of `container`; returns the mounted file's text if it
    comes from a ConfigMap key."""
    for vm in container.get("volumeMounts", []):
        root = vm["mountPath"].rstrip("/") + "/"
        if path.startswith(root):
            vol = volumes.get(vm["name"])
            check(vol is not None, f"{where}: volumeMount {vm['name']} has no volume")
            if vol and "configMap" in vol:
                data = configs.get(vol["configMap"]["name"], {})
                key = path[len(root):]
                check(key in data, f"{where}: ConfigMap {vol['configMap']['name']} has no key {key!r} for {path}")
                return data.get(key)
            return None
    check(False, f"{where}: the config path {path} is not under any volumeMount of container "
                 f"{container.get('name')!r} (mounted: {[vm['mountPath'] for vm in container.get('volumeMounts', [])]})")
    return None


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


def check_survives_preemption(where, spec, pod, container, toml_text):
    """The issue-9 contract: a pre-empted rank set restarts and resumes from shared storage."""
    import tomllib

    cfg = tomllib.loads(toml_text)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace >= MIN_GRACE_S, f"{where}: terminationGracePeriodSeconds {grace} leaves no time for a final "
                                f"checkpoint (at least {MIN_GRACE_S})")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    ignores_disruption = any(r.get("action") == "Ignore" and any(
        c.get("type") == "DisruptionTarget" for c in r.get("onPodConditions", [])) for r in rules)
    check(ignores_disruption, f"{where}: podFailurePolicy must Ignore pods with condition DisruptionTarget "
                              f"(pre-empted pods are then replaced without using up backoffLimit)")
    world = spec.get("completions", 1)
    check(spec.get("backoffLimit", 6) >= world,
          f"{where}: backoffLimit {spec.get('backoffLimit')} < {world} ranks: one failed rank set would end the job")
    uri = cfg.get("checkpoint", {}).get("uri", "")
    check("://" in uri and not uri.startswith("file://"),
          f"{where}: checkpoint.uri {uri!r} must be shared object storage (each pod's disk is its own)")
    check(cfg.get("train", {}).get("resume") == "auto",
          f"{where}: train.resume must be \"auto\" so a restarted job continues from `latest`")
    # After a coordinated stop every rank exits with train.signal_exit_code; exit 0 would count as
    # a completed index and the job would end half-trained.
    code = cfg.get("train", {}).get("signal_exit_code", 0)
    ignored = {v for r in rules if r.get("action") == "Ignore"
               for v in r.get("onExitCodes", {}).get("values", [])
               if r.get("onExitCodes", {}).get("operator", "In") == "In"}
    check(code != 0 and code in ignored,
          f"{where}: train.signal_exit_code must be non-zero (it is {code}) and listed in a podFailurePolicy "
          f"Ignore rule's onExitCodes, or a rank set stopped by SIGTERM counts as completed")


def podman(*args):
    p = subprocess.run(["podman", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"k8s: podman {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


def in_image(image, script):
    """Runs `sh -c script` in the image as its own user; returns (exit code, output)."""
    p = subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script],
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def check_image(image, by_kind):
    """The manifests' containers against the built image."""
    cfg = json.loads(podman("image", "inspect", image))[0]["Config"]
    user = cfg.get("User", "")
    uid = int(user) if user.isdigit() else None
    check(uid not in (None, 0), f"image {image}: must run as a numeric non-root user, has {user!r}")
    check(cfg.get("Entrypoint") == ["wave-dist"], f"image {image}: ENTRYPOINT must be [\"wave-dist\"], is {cfg.get('Entrypoint')}")
    repo = image.split("/")[-1].split(":")[0]
    pods = [(f"Job {j['metadata']['name']}", j["spec"]["template"]["spec"]) for j in by_kind.get("Job", [])]
    for mj in by_kind.get("MPIJob", []):
        for role, rs in mj["spec"]["mpiReplicaSpecs"].items():
            pods.append((f"MPIJob {mj['metadata']['name']} {role}", rs["template"]["spec"]))
    for where, pod in pods:
        run_as = pod.get("securityContext", {}).get("runAsUser")
        check(run_as == uid, f"{where}: securityContext.runAsUser {run_as} is not the image's user {uid}")
        for c in pod["containers"]:
            named = c["image"].split("/")[-1].split(":")[0]
            check(named == repo, f"{where}: image {c['image']} is not the built {image}")
            cmd = c.get("command", [])
            if cmd:
                rc, out = in_image(image, f"command -v {cmd[0]}")
                check(rc == 0, f"{where}: command {cmd[0]} does not exist in {image}")
    for mj in by_kind.get("MPIJob", []):
        where = f"MPIJob {mj['metadata']['name']}"
        ssh_dir = mj["spec"].get("sshAuthMountPath", "/root/.ssh")
        (wc,) = mj["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
        cmd = wc.get("command", [])
        check(cmd[:1] == ["/usr/sbin/sshd"] and "-f" in cmd, f"{where}: workers must run `/usr/sbin/sshd -De -f <config>`")
        if "-f" in cmd[:-1]:
            conf = cmd[cmd.index("-f") + 1]
            rc, text = in_image(image, f"cat {conf} && echo HOME=$HOME && grep -h '^ *Port' /etc/ssh/ssh_config")
            check(rc == 0, f"{where}: {conf} is not readable in {image}: {text.strip()}")
            home = next((l[5:] for l in text.splitlines() if l.startswith("HOME=")), "")
            check(ssh_dir == f"{home}/.ssh", f"{where}: sshAuthMountPath {ssh_dir} is not the image user's ~/.ssh ({home}/.ssh)")
            check(f"HostKey {ssh_dir}/id_rsa" in text, f"{where}: {conf} must use the mounted {ssh_dir}/id_rsa as host key")
            port = next((l.split()[1] for l in text.splitlines() if l.startswith("Port ")), None)
            client = [l.split()[1] for l in text.splitlines() if l.strip().startswith("Port") and l.startswith(" ")]
            check(port is not None and client == [port], f"{where}: sshd listens on {port}, ssh clients use {client}")
            ports = [p["containerPort"] for p in wc.get("ports", [])]
            check(port is not None and int(port) in ports, f"{where}: workers must declare containerPort {port} (sshd)")


def main(argv):
    image = None
    if argv[:1] == ["--image"]:
        image, argv = argv[1], argv[2:]
    paths = argv
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
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        cfg_path = config_path(c["command"])
        check(cfg_path is not None, f"Job {name}: wave-dist train needs --config")
        text = check_mounted(f"Job {name}", cfg_path, c, volumes, configs) if cfg_path else None
        if text is not None:
            check_config(f"Job {name}", text)
            check_survives_preemption(f"Job {name}", spec, pod, c, text)

    for mj in by_kind.get("MPIJob", []):
        name, spec = mj["metadata"]["name"], mj["spec"]
        (launcher,) = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
        worker = spec["mpiReplicaSpecs"]["Worker"]
        cmd = launcher["command"]
        slots = spec.get("slotsPerWorker", 1) * worker["replicas"]
        check(cmd[0] == "mpirun" and int(cmd[cmd.index("-n") + 1]) == slots,
              f"MPIJob {name}: mpirun -n must equal Worker replicas x slotsPerWorker = {slots}")
        check_command(f"MPIJob {name}", cmd)
        # mpirun starts the ranks on the workers: the config must be mounted there.
        wpod = worker["template"]["spec"]
        (wc,) = wpod["containers"]
        cfg_path = config_path(cmd)
        check(cfg_path is not None, f"MPIJob {name}: wave-dist train needs --config")
        text = check_mounted(f"MPIJob {name} workers", cfg_path, wc,
                             {v["name"]: v for v in wpod.get("volumes", [])}, configs) if cfg_path else None
        if text is not None:
            check_config(f"MPIJob {name}", text)
        # Ranks started over ssh see none of the pods' env: what they need must be forwarded.
        forwarded = {cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-x"}
        for e in launcher.get("env", []) + wc.get("env", []):
            check(e["name"] in forwarded, f"MPIJob {name}: env {e['name']} is not forwarded by `mpirun -x` "
                                          f"(ranks started over ssh do not inherit it)")

    if image:
        check_image(image, by_kind)
    for p in problems:
        print(f"k8s: {p}", file=sys.stderr)
    print(f"k8s: {len(docs)} documents checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
