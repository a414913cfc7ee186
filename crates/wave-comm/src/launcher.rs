//! Rank, world size and rank-0 address from the launcher's environment variables.
//!
//! [`RankInfo::detect`] is a pure function of an environment map, so every launcher is
//! unit-tested without launching anything; [`RankInfo::from_env`] applies it to the process.

use std::collections::HashMap;
use std::fmt;

use crate::Error;

/// Port of rank 0's rendezvous when `MASTER_ADDR` is set without `MASTER_PORT` (torchrun's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Overrides that win over any launcher: rank, world size, local rank. `WAVE_WORLD_SIZE` is also
/// the configured world size of a Kubernetes Indexed Job.
pub const RANK_VAR: &str = "WAVE_RANK";
/// See [`RANK_VAR`].
pub const WORLD_SIZE_VAR: &str = "WAVE_WORLD_SIZE";
/// See [`RANK_VAR`].
pub const LOCAL_RANK_VAR: &str = "WAVE_LOCAL_RANK";
/// Overrides the number of ranks on this node (what the default intra-op thread count divides
/// the node's cores by).
pub const LOCAL_SIZE_VAR: &str = "WAVE_LOCAL_SIZE";

/// Who started this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process, world size 1.
    Single,
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK`).
    OpenMpi,
    /// MPICH/Hydra or another PMI launcher (`PMI_RANK/PMI_SIZE`, `MPI_LOCALRANKID`).
    Mpich,
    /// Slurm's `srun` (`SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID`).
    Slurm,
    /// torchrun or anything that sets `RANK/WORLD_SIZE/LOCAL_RANK`.
    Torchrun,
    /// Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` plus `WAVE_WORLD_SIZE`.
    IndexedJob,
    /// Only the `WAVE_RANK`/`WAVE_WORLD_SIZE` overrides.
    Explicit,
}

impl Launcher {
    /// Whether the processes were started by an MPI launcher, so `MPI_Init` finds its peers.
    pub fn is_mpi(self) -> bool {
        matches!(self, Launcher::OpenMpi | Launcher::Mpich)
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Single => "none",
            Launcher::OpenMpi => "open-mpi",
            Launcher::Mpich => "mpich",
            Launcher::Slurm => "slurm",
            Launcher::Torchrun => "torchrun",
            Launcher::IndexedJob => "indexed-job",
            Launcher::Explicit => "explicit",
        })
    }
}

/// Where this process sits in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankInfo {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Rank among the processes of this node; selects the GPU (`cuda:local_rank`).
    pub local_rank: usize,
    /// Processes of this job on this node (1 without a launcher). Taken from the launcher
    /// (`OMPI_COMM_WORLD_LOCAL_SIZE`, `MPI_LOCALNRANKS`, `LOCAL_WORLD_SIZE`, Slurm's tasks per
    /// node; 1 per pod in a Kubernetes Indexed Job) or [`LOCAL_SIZE_VAR`]; when the launcher does
    /// not say, the whole world is assumed to share the node (the safe side for thread counts).
    pub local_size: usize,
    /// Who started the job.
    pub launcher: Launcher,
    /// Rank 0's rendezvous address (`MASTER_ADDR`, `MASTER_PORT`), when given.
    pub master: Option<(String, u16)>,
}

/// The variables each launcher sets (rank, world size, local rank, ranks on this node), in order
/// of precedence: MPI launchers first (an `mpirun` inside a Slurm allocation also inherits
/// `SLURM_*`), then torchrun-style, then Slurm (whose per-node count may also come from
/// `SLURM_TASKS_PER_NODE`, see [`slurm_tasks_on_node`]).
const SCHEMES: [(Launcher, &str, &str, &str, &str); 4] = [
    (
        Launcher::OpenMpi,
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    (
        Launcher::Mpich,
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALRANKID",
        "MPI_LOCALNRANKS",
    ),
    (
        Launcher::Torchrun,
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
    ),
    (
        Launcher::Slurm,
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "SLURM_NTASKS_PER_NODE",
    ),
];

/// Tasks Slurm placed on node `node` from `SLURM_TASKS_PER_NODE` (`"2(x3),1"`: two tasks on each
/// of the first three nodes, one on the fourth); `None` when the value does not parse.
fn slurm_tasks_on_node(spec: &str, node: usize) -> Option<usize> {
    let mut first = 0;
    for group in spec.split(',') {
        let (count, repeat) = match group.split_once("(x") {
            Some((c, r)) => (c.trim().parse().ok()?, r.strip_suffix(')')?.parse().ok()?),
            None => (group.trim().parse().ok()?, 1usize),
        };
        if node < first + repeat {
            return Some(count);
        }
        first += repeat;
    }
    None
}

/// A value and the variable it came from (for error messages).
#[derive(Clone, Copy)]
struct Sourced<'a> {
    value: usize,
    var: &'a str,
}

struct Env<'a>(&'a HashMap<String, String>);

impl<'a> Env<'a> {
    fn get(&self, var: &str) -> Option<&'a str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn number<'v>(&self, var: &'v str) -> Result<Option<Sourced<'v>>, Error> {
        match self.get(var) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(|value| Some(Sourced { value, var }))
                .map_err(|_| Error::Launcher {
                    vars: format!("{var}={raw}"),
                    reason: "not a non-negative integer".into(),
                }),
        }
    }

    fn describe(&self, vars: &[&str]) -> String {
        let shown: Vec<String> = vars
            .iter()
            .map(|v| format!("{v}={}", self.get(v).unwrap_or("<unset>")))
            .collect();
        shown.join(", ")
    }
}

impl RankInfo {
    /// One process, no launcher.
    pub fn single() -> RankInfo {
        RankInfo {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_size: 1,
            launcher: Launcher::Single,
            master: None,
        }
    }

    /// [`RankInfo::detect`] on this process's environment.
    pub fn from_env() -> Result<RankInfo, Error> {
        RankInfo::detect(&std::env::vars().collect())
    }

    /// Reads rank, world size, local rank and rank 0's address from launcher variables.
    ///
    /// Precedence: Open MPI, MPICH/PMI, torchrun-style, Slurm, Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX` with the world size in `WAVE_WORLD_SIZE`); none of them means one
    /// process. `WAVE_RANK`, `WAVE_WORLD_SIZE`, `WAVE_LOCAL_RANK` and `WAVE_LOCAL_SIZE` override
    /// whatever the launcher says. Rank 0's address is `MASTER_ADDR` (a host name, such as a headless Service, or an IP)
    /// and `MASTER_PORT` (default [`DEFAULT_MASTER_PORT`]). Missing halves (a rank without a world
    /// size), unparsable numbers and a rank or local rank not below the world size are errors that
    /// name the variables.
    pub fn detect(env: &HashMap<String, String>) -> Result<RankInfo, Error> {
        let env = Env(env);
        let mut launcher = Launcher::Single;
        let (mut rank, mut world, mut local, mut local_size) = (None, None, None, None);
        for (which, rank_var, world_var, local_var, local_size_var) in SCHEMES {
            if let Some(r) = env.number(rank_var)? {
                let w = env.number(world_var)?.ok_or_else(|| Error::Launcher {
                    vars: env.describe(&[rank_var, world_var]),
                    reason: format!("{rank_var} is set but {world_var} is not"),
                })?;
                (launcher, rank, world, local) = (which, Some(r), Some(w), env.number(local_var)?);
                local_size = env.number(local_size_var)?.map(|s| s.value);
                if which == Launcher::Slurm && local_size.is_none() {
                    let node = env.number("SLURM_NODEID")?.map_or(0, |n| n.value);
                    local_size = env
                        .get("SLURM_TASKS_PER_NODE")
                        .and_then(|spec| slurm_tasks_on_node(spec, node));
                }
                break;
            }
        }
        if launcher == Launcher::Single {
            if let Some(index) = env.number("JOB_COMPLETION_INDEX")? {
                let w = env.number(WORLD_SIZE_VAR)?.ok_or_else(|| Error::Launcher {
                    vars: env.describe(&["JOB_COMPLETION_INDEX", WORLD_SIZE_VAR]),
                    reason: format!("a Kubernetes Indexed Job needs its world size (the Job's completions) in {WORLD_SIZE_VAR}"),
                })?;
                (launcher, rank, world) = (Launcher::IndexedJob, Some(index), Some(w));
                // One rank per pod: the pod's CPU limit is its own.
                local_size = Some(1);
            }
        }
        // Explicit overrides.
        if let Some(r) = env.number(RANK_VAR)? {
            rank = Some(r);
        }
        if let Some(w) = env.number(WORLD_SIZE_VAR)? {
            world = Some(w);
        }
        if let Some(l) = env.number(LOCAL_RANK_VAR)? {
            local = Some(l);
        }
        if let Some(n) = env.number(LOCAL_SIZE_VAR)? {
            local_size = Some(n.value);
        }
        if launcher == Launcher::Single && (rank.is_some() || world.is_some_and(|w| w.value != 1)) {
            launcher = Launcher::Explicit;
        }

        let world = world.unwrap_or(Sourced {
            value: 1,
            var: WORLD_SIZE_VAR,
        });
        let rank = match rank {
            Some(r) => r,
            None if world.value == 1 => Sourced {
                value: 0,
                var: RANK_VAR,
            },
            None => {
                return Err(Error::Launcher {
                    vars: env.describe(&[world.var, RANK_VAR, "JOB_COMPLETION_INDEX"]),
                    reason: format!(
                        "world size {} but no rank; set {RANK_VAR} or JOB_COMPLETION_INDEX",
                        world.value
                    ),
                })
            }
        };
        let local = local.unwrap_or(Sourced {
            value: 0,
            var: LOCAL_RANK_VAR,
        });
        if world.value == 0 {
            return Err(Error::Launcher {
                vars: env.describe(&[world.var]),
                reason: "world size must be at least 1".into(),
            });
        }
        for (what, v) in [("rank", rank), ("local rank", local)] {
            if v.value >= world.value {
                return Err(Error::Launcher {
                    vars: env.describe(&[v.var, world.var]),
                    reason: format!(
                        "{what} {} is not below the world size {}",
                        v.value, world.value
                    ),
                });
            }
        }

        let master = match env.get("MASTER_ADDR") {
            None => None,
            Some(host) => {
                let port = match env.get("MASTER_PORT") {
                    None => DEFAULT_MASTER_PORT,
                    Some(raw) => raw.parse().ok().filter(|&p: &u16| p != 0).ok_or_else(|| {
                        Error::Launcher {
                            vars: env.describe(&["MASTER_PORT"]),
                            reason: "not a TCP port (1-65535)".into(),
                        }
                    })?,
                };
                Some((host.to_string(), port))
            }
        };
        // Unknown: assume every rank shares this node. A count that cannot hold this rank's local
        // index is raised to it rather than refused (it only sizes thread pools).
        let local_size = local_size
            .filter(|&n| n > 0)
            .unwrap_or(world.value)
            .max(local.value + 1);
        Ok(RankInfo {
            rank: rank.value,
            world_size: world.value,
            local_rank: local.value,
            local_size,
            launcher,
            master,
        })
    }
}
