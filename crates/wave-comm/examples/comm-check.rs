//! Exercises wave-comm under a real launcher; the tests and `launch/gpu-check.sh` run it.
//!
//! ```sh
//! mpirun --oversubscribe -n 4 comm-check collectives                 # MPI on CPU tensors
//! comm-check collectives --backend nccl --device cuda --bench-mb 64  # NCCL, world size 1
//! mpirun -n 2 comm-check collectives --backend mpi --device cuda     # GPU tensors staged through host memory
//! mpirun -n 2 comm-check loop --steps 10 --stall-rank 1 --stall-secs 60 --timeout 2
//! JOB_COMPLETION_INDEX=1 WAVE_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 comm-check rendezvous
//! ```
//!
//! Options: `--backend auto|local|mpi|nccl`, `--device cpu|cuda` (`cuda` = `cuda:{local_rank}`),
//! `--timeout SECONDS`, `--mpi-thread-level multiple|serialized|funneled|single`,
//! `--bench-mb MB` (time a sum all-reduce of that size), and for `loop`
//! `--steps N`, `--stall-rank R`, `--stall-secs S` (rank R sleeps S seconds before step 2's
//! all-reduce), `--fail-rank R` (rank R calls `Communicator::abort` there). Every rank prints
//! `rank R/W ...` lines; the last is `OK rank R` on success.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};
use wave_comm::{Backend, CommConfig, Communicator, MpiThreadLevel, RankInfo};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that scripts can grep (no backtrace even under RUST_BACKTRACE).
            eprintln!("comm-check: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        bail!("usage: comm-check collectives|loop|rendezvous [--option value]...");
    };
    let opts: HashMap<&str, &str> = rest
        .chunks(2)
        .map(|kv| match kv {
            [k, v] if k.starts_with("--") => Ok((&k[2..], v.as_str())),
            _ => Err(anyhow::anyhow!(
                "expected `--option value` pairs, got {kv:?}"
            )),
        })
        .collect::<Result<_>>()?;
    let num = |key: &str, default: f64| -> Result<f64> {
        opts.get(key).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("--{key} {v}"))
        })
    };
    tch::set_num_threads(1);
    let info = RankInfo::from_env()?;
    if mode == "rendezvous" {
        return rendezvous(&info, num("timeout", 30.0)?);
    }
    let device = match opts.get("device").copied().unwrap_or("cpu") {
        "cpu" => Device::Cpu,
        "cuda" => {
            let count = tch::Cuda::device_count();
            ensure!(
                count > 0,
                "rank {}: CUDA not detected (libtorch sees no GPU; is libtorch_cuda.so loaded?)",
                info.rank
            );
            println!(
                "rank {}/{}: cuda devices {count}",
                info.rank, info.world_size
            );
            Device::Cuda(info.local_rank % count as usize)
        }
        other => bail!("--device {other}: expected cpu or cuda"),
    };
    let cfg = CommConfig {
        backend: opts
            .get("backend")
            .copied()
            .unwrap_or("auto")
            .parse::<Backend>()?,
        timeout_s: num("timeout", 60.0)?,
        mpi_thread_level: opts
            .get("mpi-thread-level")
            .copied()
            .unwrap_or("multiple")
            .parse::<MpiThreadLevel>()?,
        ..CommConfig::default()
    };
    let started = Instant::now();
    let comm = Communicator::init(&info, &cfg, device)?;
    let tag = format!("rank {}/{}", comm.rank(), comm.world_size());
    println!(
        "{tag}: backend {} launcher {} pid {} init {:.2} s mpi thread level {}",
        comm.backend(),
        info.launcher,
        std::process::id(),
        started.elapsed().as_secs_f64(),
        comm.mpi_thread_level().map_or("none", |l| l.name())
    );
    match mode.as_str() {
        "collectives" => collectives(&comm, device, &tag, num("bench-mb", 0.0)?)?,
        "loop" => {
            let me = comm.rank() as f64;
            let stall = (num("stall-rank", -1.0)? == me)
                .then(|| num("stall-secs", 0.0))
                .transpose()?;
            run_loop(
                &comm,
                num("steps", 10.0)? as u64,
                stall,
                num("fail-rank", -1.0)? == me,
            )?
        }
        other => bail!("unknown mode {other}"),
    }
    println!("OK rank {}", comm.rank());
    Ok(())
}

/// Every collective against values computed on the CPU.
fn collectives(comm: &Communicator, device: Device, tag: &str, bench_mb: f64) -> Result<()> {
    let (rank, world) = (comm.rank() as i64, comm.world_size() as i64);
    let cpu = (Kind::Float, Device::Cpu);

    // Integers: exact in f32. Rank r holds i + r; the sum is world * i + world * (world - 1) / 2.
    let n = 100_003;
    let mut t = (Tensor::arange(n, cpu) + rank as f64).to_device(device);
    comm.all_reduce_sum_(&mut t, "sum check")?;
    let expected = Tensor::arange(n, cpu) * world as f64 + (world * (world - 1) / 2) as f64;
    ensure!(
        max_diff(&t, &expected) == 0.0,
        "{tag}: all_reduce sum differs from the CPU result"
    );
    println!("{tag}: all_reduce sum ok ({n} floats on {device:?})");

    // Random values: compare with the sum of every rank's tensor regenerated on the CPU.
    let gen = |r: i64| {
        tch::manual_seed(1000 + r);
        Tensor::randn([n], cpu)
    };
    let mut t = gen(rank).to_device(device);
    let expected = (0..world)
        .map(gen)
        .fold(Tensor::zeros([n], cpu), |acc, x| acc + x)
        / world as f64;
    comm.all_reduce_mean_(&mut t, "mean check")?;
    let diff = max_diff(&t, &expected);
    ensure!(
        diff < 1e-5,
        "{tag}: all_reduce mean of random values differs from the CPU result by {diff}"
    );
    println!("{tag}: all_reduce mean ok (max diff {diff:.1e})");

    // Strided (non-contiguous) tensor: staged and copied back.
    let base = Tensor::ones([64, 2], cpu).to_device(device);
    let mut column = base.select(1, 0);
    comm.all_reduce_sum_(&mut column, "strided check")?;
    ensure!(
        max_diff(&base.select(1, 0), &Tensor::full([64], world as f64, cpu)) == 0.0,
        "{tag}: strided all_reduce"
    );
    ensure!(
        max_diff(&base.select(1, 1), &Tensor::ones([64], cpu)) == 0.0,
        "{tag}: strided all_reduce touched other elements"
    );

    let mut b = Tensor::full([5], if rank == 0 { 42.0 } else { -1.0 }, cpu).to_device(device);
    comm.broadcast_(&mut b, "broadcast check")?;
    ensure!(
        max_diff(&b, &Tensor::full([5], 42.0, cpu)) == 0.0,
        "{tag}: broadcast tensor"
    );
    let msg = if rank == 0 {
        b"hello from rank 0".to_vec()
    } else {
        Vec::new()
    };
    let got = comm.broadcast_bytes(&msg, "broadcast bytes check")?;
    ensure!(
        got == b"hello from rank 0",
        "{tag}: broadcast bytes got {got:?}"
    );
    println!("{tag}: broadcast ok");

    let mine = format!("rank-{rank}-{}", "x".repeat(rank as usize));
    let all = comm.all_gather_bytes(mine.as_bytes(), "all_gather check")?;
    let want: Vec<Vec<u8>> = (0..world)
        .map(|r| format!("rank-{r}-{}", "x".repeat(r as usize)).into_bytes())
        .collect();
    ensure!(all == want, "{tag}: all_gather got {all:?}");
    println!("{tag}: all_gather ok");

    comm.check_same("config", b"same on every rank")?;
    let differs = comm.check_same("data set", format!("fingerprint {}", rank % 2).as_bytes());
    ensure!(
        differs.is_err() == (world > 1),
        "{tag}: check_same on differing values returned {differs:?}"
    );
    if let Err(e) = differs {
        println!("{tag}: check_same ok ({e})");
    }

    comm.barrier("barrier check")?;
    println!("{tag}: barrier ok");

    if bench_mb > 0.0 {
        let floats = (bench_mb * 1024.0 * 1024.0 / 4.0) as i64;
        let mut big = Tensor::ones([floats], (Kind::Float, device));
        comm.all_reduce_sum_(&mut big, "bench warm-up")?;
        let reps = 5;
        let start = Instant::now();
        for i in 0..reps {
            comm.all_reduce_sum_(&mut big, &format!("bench {i}"))?;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!("{tag}: all_reduce {bench_mb} MB on {device:?}: {ms:.2} ms");
    }
    Ok(())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu) - b).abs().max().double_value(&[])
}

/// All-reduces in a loop, as training steps do. Before step 2, `stall` makes this rank sleep
/// that many seconds, `fail` makes it abort the job as a rank hitting a local error would.
fn run_loop(comm: &Communicator, steps: u64, stall: Option<f64>, fail: bool) -> Result<()> {
    let mut t = Tensor::ones([1 << 16], (Kind::Float, Device::Cpu));
    println!("rank {} ready pid {}", comm.rank(), std::process::id());
    for step in 0..steps {
        if step == 2 {
            if let Some(secs) = stall {
                println!("rank {} stalls {secs} s before step {step}", comm.rank());
                std::thread::sleep(Duration::from_secs_f64(secs));
            }
            if fail {
                comm.abort(&format!("simulated local error before step {step}"), 3);
            }
        }
        comm.all_reduce_mean_(&mut t, &format!("step {step}"))?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Rank 0 serves a stand-in NCCL id; every rank prints what it holds afterwards.
fn rendezvous(info: &RankInfo, timeout_s: f64) -> Result<()> {
    let master = info.master.clone().context("MASTER_ADDR is not set")?;
    let id: Vec<u8> = if info.rank == 0 {
        (0..128u32).map(|i| (i * 7 + 3) as u8).collect()
    } else {
        Vec::new()
    };
    let got = wave_comm::rendezvous::exchange(
        &master,
        info.rank,
        info.world_size,
        &id,
        Duration::from_secs_f64(timeout_s),
    )?;
    let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
    println!("rank {}/{} id {hex}", info.rank, info.world_size);
    println!("OK rank {}", info.rank);
    Ok(())
}
