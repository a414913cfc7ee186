//! How many intra-op threads libtorch runs per rank.
//!
//! libgomp's worker threads spin while they wait for work, so ranks that together ask for more
//! threads than the node has cores do not just share them: each step waits for descheduled
//! spinners and gets several times slower (measured with two ranks of two threads on two cores:
//! `bench/results/threads.md`). The default therefore gives every rank on a node an equal share of
//! the node's cores, never more than the cores this process may run on (its affinity mask and CPU
//! quota, which a launcher that binds ranks to cores narrows further), and at least one.
//! `train.threads` overrides it.

use wave_comm::RankInfo;

/// Threads for one of `ranks_on_node` ranks on a node with `online` cores, of which this process
/// may use `usable`: `min(usable, online / ranks_on_node)`, at least 1. A pure function.
pub fn default_threads(usable: usize, online: usize, ranks_on_node: usize) -> usize {
    usable.min(online / ranks_on_node.max(1)).max(1)
}

/// Cores this process may run on (affinity mask and cgroup CPU quota).
fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Cores online on this node (`/sys/devices/system/cpu/online`, e.g. `0-63`), or the usable ones
/// where that is unreadable.
fn online_cores() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .unwrap_or_else(usable_cores)
}

/// Number of CPUs in a Linux CPU list (`0-3,8,10-11` has 7); `None` if it does not parse.
fn count_cpu_list(list: &str) -> Option<usize> {
    list.split(',').try_fold(0, |acc, part| {
        let n = match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
        Some(acc + n)
    })
}

/// The intra-op thread count of this rank: `configured` when non-zero, else the default share.
pub fn intra_op_threads(configured: usize, info: &RankInfo) -> usize {
    match configured {
        0 => default_threads(usable_cores(), online_cores(), info.local_size),
        n => n,
    }
}

/// Sets libtorch's intra-op threads for this rank (see [`intra_op_threads`]) and returns them.
pub fn apply(configured: usize, info: &RankInfo) -> usize {
    let threads = intra_op_threads(configured, info);
    tch::set_num_threads(threads as i32);
    threads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_an_equal_share_of_the_node_and_at_least_one() {
        // One process, whole node.
        assert_eq!(default_threads(16, 16, 1), 16);
        // mpirun -n 2 on 2 cores, unbound: one each (two each would oversubscribe).
        assert_eq!(default_threads(2, 2, 2), 1);
        // More ranks than cores still run one thread each.
        assert_eq!(default_threads(2, 2, 4), 1);
        // 8 ranks on a 64-core node.
        assert_eq!(default_threads(64, 64, 8), 8);
        // Bound to one core by the launcher: the mask wins.
        assert_eq!(default_threads(1, 64, 8), 1);
        // A CPU quota of 4 on a 64-core node (one pod).
        assert_eq!(default_threads(4, 64, 1), 4);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-63"), Some(64));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("junk"), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }
}
