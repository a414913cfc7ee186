//! The multi-host test bed: hosts with their own addresses that reach each other until a link is
//! cut, `mpirun` placing one rank in each host, and nothing left behind, not even after a panic or
//! by a test process killed outright. Skips where network namespaces cannot be made (fails under
//! `CI=true`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use wave_testkit::NetLab;

/// Tries a TCP connection from host `from` to `addr:9` (nothing listens there) for at most 3 s:
/// `true` when the peer answered (refused at once), `false` when the attempt timed out.
fn reaches(lab: &NetLab, from: usize, addr: &str) -> bool {
    let started = Instant::now();
    let out = lab
        .command(from, "timeout")
        .args(["3", "bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/9")])
        .output()
        .expect("run bash in the host");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(124) => false,
        _ => {
            assert!(stderr.contains("Connection refused"), "{stderr}");
            assert!(started.elapsed() < Duration::from_secs(2));
            true
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn hosts_have_their_own_addresses_and_reach_each_other_until_a_link_is_cut() {
    let Some(lab) = NetLab::start(2) else { return };
    let (a, b) = (lab.host(0).addr.to_string(), lab.host(1).addr.to_string());
    let shown = text(
        &lab.command(1, "ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .expect("ip in host 1"),
    );
    assert!(
        shown.contains(&format!("{b}/24")) && !shown.contains(&format!("{a}/24")),
        "{shown}"
    );
    assert!(reaches(&lab, 1, &a), "host 1 reaches host 0");
    assert!(
        reaches(&lab, 0, &lab.gateway().to_string()),
        "a host reaches the test's namespace"
    );

    lab.cut(0);
    assert!(
        !reaches(&lab, 1, &a),
        "host 0 is unreachable with its link down"
    );
    lab.restore(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reaches(&lab, 1, &a) {
        assert!(Instant::now() < deadline, "host 0 is reachable again");
    }
}

#[test]
fn mpirun_starts_one_rank_inside_each_host_through_the_agent() {
    let mpirun_ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !mpirun_ok {
        wave_testkit::missing("mpirun (Debian package openmpi-bin)");
        return;
    }
    let Some(lab) = NetLab::start(2) else { return };
    let child = lab.spawn(
        lab.mpirun()
            .args([
                "sh",
                "-c",
                "echo \"rank $OMPI_COMM_WORLD_RANK: $(ip -4 -o addr show eth0)\"",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let out = child.wait_with_output().expect("mpirun");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for (rank, host) in lab.hosts().iter().enumerate() {
        let line = all
            .lines()
            .find(|l| l.starts_with(&format!("rank {rank}: ")))
            .unwrap_or_else(|| panic!("no line from rank {rank}:\n{all}"));
        assert!(
            line.contains(&format!("{}/24", host.addr)),
            "rank {rank} runs in host {rank}: {line}"
        );
    }
}

/// Whether anything of the lab named by `netns`, `bridge` and `veths` still exists.
fn leftovers(netns: &[String], bridge: &str, veths: &[String]) -> Vec<String> {
    let listing = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().expect("ip").stdout)
            .into_owned()
    };
    let namespaces = listing(&["netns", "list"]);
    let links = listing(&["-o", "link", "show"]);
    let mut found: Vec<String> = netns
        .iter()
        .filter(|n| {
            namespaces
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        })
        .cloned()
        .collect();
    found.extend(
        std::iter::once(bridge.to_string())
            .chain(veths.iter().cloned())
            .filter(|name| {
                links.contains(&format!(": {name}:")) || links.contains(&format!(": {name}@"))
            }),
    );
    found
}

#[test]
fn dropping_the_lab_in_a_panic_removes_namespaces_links_and_processes() {
    if NetLab::start(1).is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let lab = NetLab::start(2).expect("lab");
        let sleeper = lab.spawn(lab.command(1, "sleep").arg("300"));
        let names = (
            lab.hosts()
                .iter()
                .map(|h| h.netns.clone())
                .collect::<Vec<_>>(),
            lab.bridge().to_string(),
            lab.hosts()
                .iter()
                .map(|h| h.veth.clone())
                .collect::<Vec<_>>(),
            sleeper,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while lab.pids(1).is_empty() {
            assert!(Instant::now() < deadline, "sleep runs in host 1");
            std::thread::sleep(Duration::from_millis(20));
        }
        tx.send(names).expect("send");
        panic!("a test failing while the lab is up");
    })
    .join();
    assert!(panicked.is_err());
    let (netns, bridge, veths, mut sleeper) = rx.recv().expect("names");
    // Namespace removal can lag a moment behind its last process.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftovers(&netns, &bridge, &veths).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = leftovers(&netns, &bridge, &veths);
    assert!(left.is_empty(), "left behind: {left:?}");
    let status = sleeper.wait().expect("reap");
    assert!(
        status.signal().is_some(),
        "the process started in host 1 was killed by the lab: {status:?}"
    );
}

#[test]
fn a_lab_left_behind_by_a_killed_test_process_is_swept_by_the_next() {
    if NetLab::start(1).is_none() {
        return;
    }
    // A pid above pid_max never exists: the owner of these names is certainly gone.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("number");
    let dead = format!("{:x}x0", pid_max + 1);
    let (netns, bridge) = (format!("wavetest-{dead}-h0"), format!("wtb{dead}"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out));
    };
    ip(&["netns", "add", &netns]);
    ip(&["link", "add", &bridge, "type", "bridge"]);
    assert_eq!(
        leftovers(std::slice::from_ref(&netns), &bridge, &[]).len(),
        2
    );
    let _next = NetLab::start(1).expect("lab");
    assert!(
        leftovers(std::slice::from_ref(&netns), &bridge, &[]).is_empty(),
        "{:?}",
        leftovers(&[netns], &bridge, &[])
    );
}
