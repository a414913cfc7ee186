//! Row-sparse embedding gradient sync under real `mpirun` ranks: the same gradients as the dense
//! all-reduce (untouched rows exactly, touched rows within 1e-6), the same AdamW update bit for
//! bit on rows no rank touched, the dense path taken when the gradient is dense, fewer bytes on
//! the wire, and training runs that agree with sync on and off.
//!
//! The collective-level test relaunches this test binary under `mpirun -n 2` and `-n 4`; each
//! rank then runs [`worker`] (selected by an environment variable).

mod common;

use std::path::Path;

use common::*;
use tch::{Device, Kind, Tensor};
use wave_comm::{CommConfig, Communicator, RankInfo};
use wave_train::optim::AdamW;
use wave_train::{GradientBuckets, TrainConfig};

const WORKER_VAR: &str = "WAVE_SPARSE_SYNC_WORKER";
const VOCAB: i64 = 1000;
const D: i64 = 16;

/// A table, a matrix and a bias with fixed values, requiring gradients.
fn params() -> Vec<(String, Tensor)> {
    tch::manual_seed(5);
    let make =
        |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true);
    vec![
        ("emb".to_string(), make(&[VOCAB, D])),
        ("w".to_string(), make(&[5, 3])),
        ("b".to_string(), make(&[3])),
    ]
}

/// How the ranks' embedding gradients look.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// Each rank touches 30 rows of its own plus row 7; rank 1 touches none.
    Sparse,
    /// Every row non-zero on every rank (what a tied language-model head gives).
    Dense,
    /// Sparse on every rank but rank 0, whose gradient is dense.
    OneDense,
}

/// This rank's gradients for `case`: `(emb, w, b)`.
fn gradients(case: Case, rank: usize) -> Vec<Tensor> {
    tch::manual_seed(100 + rank as i64);
    let opts = (Kind::Float, Device::Cpu);
    let dense_table = Tensor::randn([VOCAB, D], opts);
    let sparse_table = || {
        let g = Tensor::zeros([VOCAB, D], opts);
        if rank != 1 {
            let mut rows = Tensor::randint(VOCAB, [30], (Kind::Int64, Device::Cpu));
            rows = Tensor::cat(&[rows, Tensor::from_slice(&[7i64])], 0);
            let _ = g
                .shallow_clone()
                .index_copy_(0, &rows, &Tensor::randn([31, D], opts));
        }
        g
    };
    let emb = match case {
        Case::Sparse => sparse_table(),
        Case::Dense => dense_table,
        Case::OneDense if rank == 0 => dense_table,
        Case::OneDense => sparse_table(),
    };
    vec![emb, Tensor::randn([5, 3], opts), Tensor::randn([3], opts)]
}

fn set_grads(params: &[(String, Tensor)], grads: &[Tensor]) {
    assert_eq!(params.len(), grads.len());
    for ((_, p), g) in params.iter().zip(grads) {
        let mut grad = p.grad();
        tch::no_grad(|| grad.copy_(g));
    }
}

fn handles(params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// One rank of the collective-level check: for each case, the sparse-synced gradients against
/// the dense all-reduce, then one AdamW step on both from the same (non-zero) moments.
fn worker() {
    let info = RankInfo::from_env().expect("launcher variables");
    let comm = Communicator::init(&info, &CommConfig::default(), Device::Cpu).expect("MPI");
    let rank = comm.rank();
    let train = TrainConfig::default();
    for case in [Case::Sparse, Case::Dense, Case::OneDense] {
        let (sparse_params, dense_params) = (params(), params());
        let sparse =
            GradientBuckets::new(&comm, &sparse_params, 1 << 20, &["emb"]).expect("layout");
        let dense = GradientBuckets::new(&comm, &dense_params, 1 << 20, &[]).expect("layout");
        let (mut sparse_opt, mut dense_opt) = (
            AdamW::new(handles(&sparse_params), &train),
            AdamW::new(handles(&dense_params), &train),
        );
        // A first, identical step on a dense gradient: every row gets non-zero moments.
        tch::manual_seed(1);
        let warm: Vec<Tensor> = sparse_params
            .iter()
            .map(|(_, p)| Tensor::randn(p.size(), (Kind::Float, Device::Cpu)))
            .collect();
        for (ps, opt) in [
            (&sparse_params, &mut sparse_opt),
            (&dense_params, &mut dense_opt),
        ] {
            set_grads(ps, &warm);
            opt.step(1e-3);
        }

        let mine = gradients(case, rank);
        set_grads(&sparse_params, &mine);
        set_grads(&dense_params, &mine);
        let s = sparse.reduce(&comm, 2).expect("sparse sync");
        let d = dense.reduce(&comm, 2).expect("dense sync");
        let (sg, dg) = (sparse_params[0].1.grad(), dense_params[0].1.grad());
        let untouched = dg.ne(0.0).any_dim(1, false).logical_not();
        let diff = max_abs_diff(&sg, &dg);
        assert!(
            diff <= 1e-6,
            "rank {rank} {case:?}: embedding gradients differ by {diff}"
        );
        let zero_rows = sg.index_select(0, &untouched.nonzero().reshape([-1]));
        assert!(
            bool::try_from(zero_rows.eq(0.0).all()).expect("bool"),
            "rank {rank} {case:?}: a row no rank touched is not zero"
        );
        for i in 1..3 {
            assert!(
                sparse_params[i].1.grad().equal(&dense_params[i].1.grad()),
                "rank {rank} {case:?}: {} differs",
                sparse_params[i].0
            );
        }
        assert_eq!(s.dense_bytes, 4 * (VOCAB * D + 15 + 3) as usize);
        assert_eq!(
            d.bytes, d.dense_bytes,
            "the dense path sends every gradient"
        );
        match case {
            Case::Sparse => assert!(
                s.bytes * 4 < s.dense_bytes,
                "rank {rank}: sparse sync sent {} of {} bytes",
                s.bytes,
                s.dense_bytes
            ),
            Case::Dense | Case::OneDense => {
                assert!(
                    s.bytes >= s.dense_bytes,
                    "rank {rank} {case:?}: dense path expected"
                );
                let exact = sg.equal(&dg);
                assert!(
                    exact,
                    "rank {rank} {case:?}: dense path must equal the all-reduce bit for bit"
                );
            }
        }
        if let Case::Dense = case {
            // After a large union the table goes dense without the flags for a while, then the
            // union is measured again (every rank decides alike, so the collectives match).
            let probe = params();
            let buckets = GradientBuckets::new(&comm, &probe, 1 << 20, &["emb"]).expect("layout");
            for (step, with_flags) in [(2u64, true), (3, false), (101, false), (102, true)] {
                set_grads(&probe, &gradients(case, rank));
                let stats = buckets.reduce(&comm, step).expect("sync");
                let flags = if with_flags { 4 * VOCAB as usize } else { 0 };
                assert_eq!(
                    stats.bytes,
                    stats.dense_bytes + flags,
                    "rank {rank} step {step}: bytes sent"
                );
            }
        }

        sparse_opt.step(1e-3);
        dense_opt.step(1e-3);
        let (sp, dp) = (&sparse_params[0].1, &dense_params[0].1);
        let rows = untouched.nonzero().reshape([-1]);
        assert!(rows.numel() > 0 || !matches!(case, Case::Sparse));
        assert!(
            sp.index_select(0, &rows).equal(&dp.index_select(0, &rows)),
            "rank {rank} {case:?}: AdamW moved an untouched row differently"
        );
        for ((name, a), (_, b)) in sparse_opt.state().0.iter().zip(&dense_opt.state().0) {
            if name.starts_with("emb") {
                assert!(
                    a.index_select(0, &rows).equal(&b.index_select(0, &rows)),
                    "rank {rank} {case:?}: {name} of untouched rows differs"
                );
            }
        }
        let diff = max_abs_diff(sp, dp);
        assert!(
            diff <= 1e-6,
            "rank {rank} {case:?}: parameters differ by {diff}"
        );
    }
    println!("rank {rank}: sparse sync checks passed");
}

#[test]
fn sparse_embedding_sync_equals_the_dense_all_reduce_at_2_and_4_ranks() {
    if std::env::var_os(WORKER_VAR).is_some() {
        worker();
        return;
    }
    if !mpirun_available() {
        return;
    }
    let me = std::env::current_exe().expect("test binary");
    for ranks in [2, 4] {
        let out = mpirun()
            .args(["-n", &ranks.to_string()])
            .arg(&me)
            .args([
                "--exact",
                "sparse_embedding_sync_equals_the_dense_all_reduce_at_2_and_4_ranks",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_VAR, "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{ranks} ranks failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.matches("sparse sync checks passed").count(),
            ranks,
            "every rank ran the checks:\n{stdout}"
        );
    }
}

/// The metrics lines of a run: (loss, grad bytes, dense grad bytes) per step.
fn metrics(run_dir: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
            (
                f("loss"),
                f("grad_bytes_per_step"),
                f("dense_grad_bytes_per_step"),
            )
        })
        .collect()
}

fn train_two_ranks(config: &str, data: &Path, run_dir: &Path, extra: &[String]) {
    let mut sets = vec![
        format!("data.uri={:?}", data.to_str().expect("utf-8")),
        format!("train.run_dir={:?}", run_dir.to_str().expect("utf-8")),
        "train.max_steps=12".into(),
        "train.max_seconds=0".into(),
        "train.lr=3e-3".into(),
        "train.log_every_steps=1".into(),
        "train.eval_every_steps=0".into(),
        "train.eval_max_batches=2".into(),
        "checkpoint.every_steps=0".into(),
    ];
    sets.extend(extra.iter().cloned());
    let out = mpirun()
        .args([
            "-n",
            "2",
            env!("CARGO_BIN_EXE_wave-dist"),
            "train",
            "--config",
            config,
        ])
        .args(set_args(&sets))
        .output()
        .expect("mpirun");
    ok(&out);
}

#[test]
fn two_rank_training_sends_a_fraction_of_the_bytes_and_learns_the_same() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (on, off) = (tmp.path().join("on"), tmp.path().join("off"));
    train_two_ranks("configs/smoke.toml", data, &on, &[]);
    train_two_ranks(
        "configs/smoke.toml",
        data,
        &off,
        &["train.sparse_embedding_sync=false".into()],
    );
    let (a, b) = (metrics(&on), metrics(&off));
    assert_eq!(a.len(), 12);
    assert_eq!(a.len(), b.len());
    for (step, ((la, bytes, dense), (lb, bytes_off, _))) in a.iter().zip(&b).enumerate() {
        // Two ranks add in one order: the gradients, hence the losses, are the same.
        assert!(
            (la - lb).abs() <= 1e-6 * la.abs(),
            "step {step}: loss {la} vs {lb}"
        );
        assert!(
            bytes * 4.0 < *dense,
            "step {step}: {bytes} of {dense} bytes sent"
        );
        assert_eq!(
            bytes_off, dense,
            "step {step}: sync off sends every gradient"
        );
    }
}

#[test]
fn a_tied_language_model_head_takes_the_dense_path() {
    let Some(data) = packed_corpus() else { return };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("mlm");
    let small = [
        "data.max_length=64".to_string(),
        "data.batch_size=16".into(),
        "model.d_model=32".into(),
        "train.warmup_steps=2".into(),
        "train.threads=1".into(),
    ];
    train_two_ranks("configs/pretrain-mlm-quick.toml", data, &run, &small);
    for (step, (loss, bytes, dense)) in metrics(&run).iter().enumerate() {
        assert!(loss.is_finite());
        assert!(
            bytes >= dense,
            "step {step}: the tied head makes the embedding gradient dense, yet {bytes} < {dense} bytes"
        );
    }
}
