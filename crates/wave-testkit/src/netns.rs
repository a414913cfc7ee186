//! [`NetLab`]: several "hosts" on one machine, for tests of what crosses a network: ranks on
//! different addresses, a link cut mid-run, a launcher reaching its daemons over TCP.
//!
//! Each host is a Linux network namespace with one interface (`eth0`, address `10.213.K.i/24`)
//! joined to the other hosts by a veth pair and a bridge in the test's own namespace, which holds
//! `10.213.K.254` (the gateway: a server the test runs on it is reachable from every host). Only
//! the network is separate; the hosts share the file system, so a checkpoint folder is "shared
//! storage". Everything carries a name unique to the test process (`wavetest-<pid>x<n>-h<i>`,
//! `wtb…`, `wtv…`); dropping the lab (also while a panic unwinds) kills every process started in
//! a host or through the lab and removes the namespaces, links and bridge. Leftovers of a test
//! process that was killed outright are swept by the next lab whose creator finds that process
//! gone.
//!
//! Needs root (or `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`) and `ip` (iproute2); otherwise
//! [`NetLab::start`] returns `None` after [`crate::missing`].
//!
//! ```no_run
//! let Some(lab) = wave_testkit::NetLab::start(2) else { return };
//! let out = lab.command(1, "ip").args(["-4", "-o", "addr", "show", "eth0"]).output().unwrap();
//! assert!(String::from_utf8_lossy(&out.stdout).contains(&lab.host(1).addr.to_string()));
//! lab.cut(1); // ip link set <host 1's veth> down: host 1 is unreachable
//! lab.restore(1);
//! ```

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Second octet of every lab subnet (`10.213.K.0/24`).
const NET: u8 = 213;
/// Prefix of the namespaces' names.
const NETNS_PREFIX: &str = "wavetest-";
/// Prefix of bridge names.
const BRIDGE_PREFIX: &str = "wtb";
/// Prefix of the veth ends in the test's namespace.
const VETH_PREFIX: &str = "wtv";
/// Where subnets are reserved (one folder per subnet, holding the owner's pid).
const RESERVATIONS: &str = "wave-testkit-netns";

/// Labs created by this process so far (part of their names).
static LABS: AtomicUsize = AtomicUsize::new(0);

/// One host of a [`NetLab`].
#[derive(Clone, Debug)]
pub struct Host {
    /// Name of its network namespace (`ip netns exec <netns> …`).
    pub netns: String,
    /// Its address on the lab's subnet (interface `eth0`).
    pub addr: Ipv4Addr,
    /// Its veth end in the test's namespace (what [`NetLab::cut`] takes down).
    pub veth: String,
}

/// Hosts as network namespaces on a bridge; see the module docs.
pub struct NetLab {
    id: String,
    bridge: Option<String>,
    subnet: [u8; 3],
    reservation: Option<PathBuf>,
    hosts: Vec<Host>,
    /// Process groups started through the lab (`mpirun` lives in the test's namespace).
    groups: Mutex<Vec<u32>>,
}

impl NetLab {
    /// Creates `hosts` hosts (1 to 9), or returns `None` after [`crate::missing`] when network
    /// namespaces cannot be made here. Panics when creation fails half-way for another reason.
    pub fn start(hosts: usize) -> Option<NetLab> {
        assert!(
            (1..=9).contains(&hosts),
            "NetLab: 1 to 9 hosts, not {hosts}"
        );
        if !ip_works() {
            crate::missing("`ip` (iproute2) and the right to create network namespaces (root)");
            return None;
        }
        sweep_stale();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:x}x{n:x}", std::process::id());
        let probe = format!("{NETNS_PREFIX}{id}-probe");
        if ip(&["netns", "add", &probe]).is_err() {
            crate::missing(
                "the right to create network namespaces (`ip netns add` failed: run as root)",
            );
            return None;
        }
        let _ = ip(&["netns", "del", &probe]);
        let mut lab = NetLab {
            id,
            bridge: None,
            subnet: [10, NET, 0],
            reservation: None,
            hosts: Vec::new(),
            groups: Mutex::new(Vec::new()),
        };
        let (third, reservation) = reserve_subnet(n);
        lab.subnet[2] = third;
        lab.reservation = Some(reservation);
        let bridge = format!("{BRIDGE_PREFIX}{}", lab.id);
        must(ip(&["link", "add", &bridge, "type", "bridge"]));
        lab.bridge = Some(bridge.clone());
        must(ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            &bridge,
        ]));
        must(ip(&["link", "set", &bridge, "up"]));
        for i in 0..hosts {
            let host = Host {
                netns: format!("{NETNS_PREFIX}{}-h{i}", lab.id),
                addr: lab.addr(i as u8 + 1),
                veth: format!("{VETH_PREFIX}{}h{i}", lab.id),
            };
            must(ip(&["netns", "add", &host.netns]));
            lab.hosts.push(host.clone());
            let (ns, veth) = (host.netns.as_str(), host.veth.as_str());
            must(ip(&[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]));
            must(ip(&["link", "set", veth, "master", &bridge]));
            must(ip(&["link", "set", veth, "up"]));
            must(ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", host.addr),
                "dev",
                "eth0",
            ]));
            must(ip(&["-n", ns, "link", "set", "eth0", "up"]));
            must(ip(&["-n", ns, "link", "set", "lo", "up"]));
        }
        Some(lab)
    }

    fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }

    /// The bridge joining the hosts, in the test's namespace.
    pub fn bridge(&self) -> &str {
        self.bridge.as_deref().unwrap_or_default()
    }

    /// The hosts, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The lab's subnet, `10.213.K.0/24` (for `btl_tcp_if_include` and the like).
    pub fn subnet(&self) -> String {
        format!("{}/24", self.addr(0))
    }

    /// The bridge's address in the test's own namespace, reachable from every host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(254)
    }

    /// `program` to be run inside host `i` (through `ip netns exec`), in a process group of its
    /// own. Start it with [`NetLab::spawn`] so that the lab ends it.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].netns])
            .arg(program)
            .process_group(0);
        cmd
    }

    /// `mpirun` in the test's namespace starting one rank per host, with
    /// `tests/netns-agent.sh` instead of ssh and TCP (daemons and MPI messages) restricted to the
    /// lab's subnet. Append the program and its arguments; start it with [`NetLab::spawn`].
    pub fn mpirun(&self) -> Command {
        let hosts: Vec<String> = self.hosts.iter().map(|h| format!("{}:1", h.addr)).collect();
        let map: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("{}={}", h.addr, h.netns))
            .collect();
        let subnet = self.subnet();
        let mut cmd = Command::new("mpirun");
        cmd.args([
            "-n",
            &self.hosts.len().to_string(),
            "--host",
            &hosts.join(","),
        ])
        .arg("--mca")
        .arg("plm_rsh_agent")
        .arg(agent_script())
        .args(["--mca", "btl", "tcp,self"])
        .args(["--mca", "pml", "ob1"])
        .args(["--mca", "btl_tcp_if_include", &subnet])
        .args(["--mca", "oob_tcp_if_include", &subnet])
        // Open MPI 4.1's remote daemon (orted) copies hwloc's topology into a shared-memory
        // segment mapped at the address of its largest free virtual-memory hole; now and then
        // that write faults (a segfault in hwloc_shmem_topology_write) and the job never
        // starts. Sharing the topology only saves memory: turn it off.
        .args(["--mca", "rtc_hwloc_vmhole", "none"])
        .env("WAVE_NETNS_HOSTS", map.join(" "))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .process_group(0);
        cmd
    }

    /// Starts `cmd` (made by [`NetLab::command`] or [`NetLab::mpirun`], or any command given a
    /// process group of its own) and records its process group, which the lab kills when dropped.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let child = cmd.process_group(0).spawn().expect("NetLab: spawn");
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.id());
        child
    }

    /// Takes host `i`'s link down: from now on it can reach nobody and nobody reaches it.
    pub fn cut(&self, i: usize) {
        must(ip(&["link", "set", &self.hosts[i].veth, "down"]));
    }

    /// Brings host `i`'s link back up and returns once the host answers on it again.
    ///
    /// `ip link set up` returns before the link carries traffic (carrier, then neighbour
    /// resolution); a job started at once can find its daemons unreachable. The host counts as
    /// back when a TCP connection from the test's namespace to a closed port of it is refused
    /// (its kernel answered) rather than timing out.
    pub fn restore(&self, i: usize) {
        must(ip(&["link", "set", &self.hosts[i].veth, "up"]));
        let target = std::net::SocketAddr::from((self.hosts[i].addr, 9));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "NetLab: host {i} ({}) still unreachable 20 s after its link came back: {e}",
                    self.hosts[i].addr
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pids of the processes running inside host `i`.
    pub fn pids(&self, i: usize) -> Vec<u32> {
        netns_pids(&self.hosts[i].netns)
    }

    /// Ends every process started through the lab or running inside a host (SIGTERM, then
    /// SIGKILL after 2 s), and waits (at most 10 s) until they are gone.
    pub fn kill_all(&self) {
        let groups: Vec<u32> = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let alive = || -> Vec<u32> {
            let mut pids: Vec<u32> = self
                .hosts
                .iter()
                .flat_map(|h| netns_pids(&h.netns))
                .collect();
            pids.extend(groups.iter().flat_map(|&g| group_members(g)));
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let started = Instant::now();
        for signal in ["-TERM", "-KILL"] {
            for &group in &groups {
                signal_pid(signal, &format!("-{group}"));
            }
            for pid in alive() {
                signal_pid(signal, &pid.to_string());
            }
            while !alive().is_empty() && started.elapsed() < Duration::from_secs(10) {
                if signal == "-TERM" && started.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.kill_all();
        for host in &self.hosts {
            // Deleting our end deletes the pair; the namespace goes once nothing refers to it.
            let _ = ip(&["link", "del", &host.veth]);
            let _ = ip(&["netns", "del", &host.netns]);
        }
        if let Some(bridge) = &self.bridge {
            let _ = ip(&["link", "del", bridge]);
        }
        if let Some(reservation) = &self.reservation {
            let _ = std::fs::remove_dir_all(reservation);
        }
    }
}

/// `tests/netns-agent.sh` of this repository.
pub fn agent_script() -> PathBuf {
    repo_script("netns-agent.sh")
}

/// `tests/record-rank.sh` of this repository: prefix a rank's command with it and a folder to get
/// the rank's output and exit status in files ([`RankRecord`]), even when the launcher cannot
/// forward them.
pub fn record_rank_script() -> PathBuf {
    repo_script("record-rank.sh")
}

fn repo_script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests")
        .join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// What `tests/record-rank.sh` wrote for one rank.
#[derive(Clone, Debug, Default)]
pub struct RankRecord {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Its pid (`None` before it started).
    pub pid: Option<u32>,
    /// Its exit status (`None` while it runs; 128+N when signal N ended it).
    pub status: Option<i32>,
}

impl RankRecord {
    /// Reads rank `rank`'s files from `dir`.
    pub fn read(dir: &Path, rank: usize) -> RankRecord {
        let file = |ext: &str| std::fs::read_to_string(dir.join(format!("rank-{rank}.{ext}"))).ok();
        RankRecord {
            stdout: file("out").unwrap_or_default(),
            stderr: file("err").unwrap_or_default(),
            pid: file("pid").and_then(|p| p.trim().parse().ok()),
            status: file("status").and_then(|s| s.trim().parse().ok()),
        }
    }
}

/// Whether `ip` runs at all.
fn ip_works() -> bool {
    Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `ip ARGS`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A set-up step that must work once namespaces are allowed.
fn must(result: Result<(), String>) {
    if let Err(e) = result {
        panic!("NetLab set-up failed: {e}");
    }
}

fn netns_pids(netns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (not zombie) processes whose process group is `group`.
fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid pgrp …"; comm may hold spaces, so split after its ')'.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            fields.first().is_some_and(|s| *s != "Z")
                && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group)
        })
        .collect()
}

fn signal_pid(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The pid in a name `<prefix><pid hex>x<n hex>…`, if the name is one of ours.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let hex = name.strip_prefix(prefix)?.split_once('x')?.0;
    u32::from_str_radix(hex, 16).ok()
}

fn is_dead(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces, links and subnet reservations of labs whose test process is gone.
fn sweep_stale() {
    let listing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for netns in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner_pid(netns, NETNS_PREFIX).is_some_and(is_dead) {
            for pid in netns_pids(netns) {
                signal_pid("-KILL", &pid.to_string());
            }
            let _ = ip(&["netns", "del", netns]);
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
        let name = link.split('@').next().unwrap_or(link);
        let stale = [BRIDGE_PREFIX, VETH_PREFIX]
            .iter()
            .any(|p| owner_pid(name, p).is_some_and(is_dead));
        if stale {
            let _ = ip(&["link", "del", name]);
        }
    }
    let dir = std::env::temp_dir().join(RESERVATIONS);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let owner = std::fs::read_to_string(entry.path().join("pid")).ok();
        if owner
            .and_then(|p| p.trim().parse().ok())
            .is_some_and(is_dead)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Reserves a free `10.213.K.0/24` (a folder per subnet, created atomically, holding our pid) that
/// no interface of the test's namespace uses; returns K and the reservation.
fn reserve_subnet(n: usize) -> (u8, PathBuf) {
    let dir = std::env::temp_dir().join(RESERVATIONS);
    std::fs::create_dir_all(&dir).expect("NetLab: reservation folder");
    let in_use = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = (std::process::id() as usize)
        .wrapping_mul(7)
        .wrapping_add(n * 37);
    for k in (0..256).map(|i| ((start + i) % 256) as u8) {
        if in_use.contains(&format!(" 10.{NET}.{k}.")) {
            continue;
        }
        let path = dir.join(format!("10.{NET}.{k}"));
        if std::fs::create_dir(&path).is_ok() {
            std::fs::write(path.join("pid"), std::process::id().to_string())
                .expect("NetLab: reservation");
            return (k, path);
        }
    }
    panic!(
        "NetLab: no free subnet 10.{NET}.K.0/24 (see {})",
        dir.display()
    );
}
