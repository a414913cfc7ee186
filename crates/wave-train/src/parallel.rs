//! Data parallelism on top of a [`Communicator`]: the start-up agreement, the initial broadcast,
//! bucketed gradient averaging and metric reductions. With one rank every function is free.

use std::collections::BTreeMap;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use wave_comm::Communicator;

use crate::Error;

/// Flattens a TOML table into `a.b.c -> value` pairs.
fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Keys whose values differ between two TOML documents, as `key (a vs b)`.
pub fn differing_keys(a: &str, b: &str) -> Vec<String> {
    let parse = |s: &str| {
        let mut out = BTreeMap::new();
        if let Ok(t) = s.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(t), &mut out);
        }
        out
    };
    let (a, b) = (parse(a), parse(b));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let missing = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k} ({} vs {})",
                a.get(k).unwrap_or(&missing),
                b.get(k).unwrap_or(&missing)
            )
        })
        .collect()
}

/// Before step 1 every rank proves it runs the same job: the resolved config (model shape
/// included) and the data set's fingerprint. On a difference every rank fails with the same
/// message naming the keys.
pub fn agree_on_job(
    comm: &Communicator,
    resolved_config: &str,
    dataset_fingerprint: &str,
) -> Result<(), Error> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mine =
        format!("{resolved_config}\n[agreement]\ndataset_fingerprint = {dataset_fingerprint:?}\n");
    let all = comm.all_gather_bytes(mine.as_bytes(), "config agreement before step 1")?;
    let root = String::from_utf8_lossy(&all[0]).into_owned();
    for (rank, other) in all.iter().enumerate().skip(1) {
        let diff = differing_keys(&root, &String::from_utf8_lossy(other));
        if !diff.is_empty() {
            return Err(Error::Config(format!(
                "rank {rank} runs a different job than rank 0; differing keys (rank 0 vs rank {rank}): {}",
                diff.join(", ")
            )));
        }
    }
    Ok(())
}

/// Rank 0's values of `tensors` to every rank, in place (parameters at start-up, optimizer moments
/// after a resume).
pub fn broadcast_tensors(
    comm: &Communicator,
    tensors: &[(String, Tensor)],
    context: &str,
) -> Result<(), Error> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    tch::no_grad(|| {
        for (_, t) in tensors {
            let mut t = t.shallow_clone();
            comm.broadcast_(&mut t, context)?;
        }
        Ok(())
    })
}

/// Seconds one gradient synchronisation took.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncTimes {
    /// Waiting at a barrier for the slowest rank to finish its backward pass (load imbalance).
    pub skew_s: f64,
    /// Flattening, all-reducing and unflattening the gradient buckets.
    pub reduce_s: f64,
}

/// The gradient buckets: a fixed partition of the parameters (in optimizer order) into runs of
/// about `bucket_bytes`, the same on every rank (checked once at start-up, names, shapes and
/// order), so no rank can ever reduce a bucket its peers lay out differently.
pub struct GradientBuckets {
    params: Vec<Tensor>,
    /// Index ranges into `params`, one per bucket.
    buckets: Vec<std::ops::Range<usize>>,
}

impl GradientBuckets {
    /// Lays out `params` (names in optimizer order) and proves every rank has the same layout.
    /// Gradients are allocated (zero) for every parameter, so each step reduces every bucket even
    /// where a rank's micro-batches left some parameter untouched.
    pub fn new(
        comm: &Communicator,
        params: &[(String, Tensor)],
        bucket_bytes: usize,
    ) -> Result<GradientBuckets, Error> {
        let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        allocate_grads(&tensors);
        let mut buckets = Vec::new();
        let mut start = 0;
        while start < tensors.len() {
            let (mut end, mut bytes) = (start, 0);
            while end < tensors.len()
                && (end == start || bytes + 4 * tensors[end].numel() <= bucket_bytes)
            {
                bytes += 4 * tensors[end].numel();
                end += 1;
            }
            buckets.push(start..end);
            start = end;
        }
        let layout: Vec<String> = buckets
            .iter()
            .map(|r| {
                let members: Vec<String> = params[r.clone()]
                    .iter()
                    .map(|(n, t)| format!("{n}{:?}", t.size()))
                    .collect();
                members.join(",")
            })
            .collect();
        comm.check_same("gradient bucket layout", layout.join(" | ").as_bytes())?;
        Ok(GradientBuckets {
            params: tensors,
            buckets,
        })
    }

    /// Sums the gradients over ranks, one all-reduce per bucket (the trainer scales each rank's
    /// loss by 1 / the global unit count, so the sum is the global mean). Called once per
    /// optimizer step, after the last micro-batch. A barrier first separates waiting for slower
    /// ranks from the cost of the reduction itself (a stalled rank shows up as skew, not as a slow
    /// network).
    pub fn reduce(&self, comm: &Communicator, step: u64) -> Result<SyncTimes, Error> {
        if comm.world_size() == 1 {
            return Ok(SyncTimes::default());
        }
        let started = Instant::now();
        comm.barrier(&format!("before the gradients of step {step}"))?;
        let skew_s = started.elapsed().as_secs_f64();
        let reduce_start = Instant::now();
        let context = format!("gradients of step {step}");
        for range in &self.buckets {
            let grads: Vec<Tensor> = self.params[range.clone()]
                .iter()
                .map(Tensor::grad)
                .collect();
            tch::no_grad(|| -> Result<(), Error> {
                if grads.len() == 1 && grads[0].is_contiguous() {
                    // A tensor that fills a bucket alone (the embedding) is reduced where it lies.
                    let mut view = grads[0].view([-1]);
                    return Ok(comm.all_reduce_sum_(&mut view, &context)?);
                }
                let flat: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
                let mut bucket = Tensor::cat(&flat, 0);
                comm.all_reduce_sum_(&mut bucket, &context)?;
                let mut offset = 0;
                for g in &grads {
                    let n = g.numel() as i64;
                    let mut view = g.view([-1]);
                    view.copy_(&bucket.narrow(0, offset, n));
                    offset += n;
                }
                Ok(())
            })?;
        }
        Ok(SyncTimes {
            skew_s,
            reduce_s: reduce_start.elapsed().as_secs_f64(),
        })
    }
}

/// Gives every parameter a (zero) gradient: a backward pass through `0 * sum(params)`.
fn allocate_grads(params: &[Tensor]) {
    if params.iter().all(|p| p.grad().defined()) {
        return;
    }
    let zero: Vec<Tensor> = params.iter().map(|p| p.sum(Kind::Float) * 0.0).collect();
    Tensor::stack(&zero, 0).sum(Kind::Float).backward();
}

/// Sums a few numbers over ranks (in f32, the collectives' type; fine for counts below 2^24).
/// `device` is the training device (NCCL reduces CUDA tensors only).
pub fn sum_over_ranks(
    comm: &Communicator,
    values: &[f64],
    device: Device,
    context: &str,
) -> Result<Vec<f64>, Error> {
    if comm.world_size() == 1 {
        return Ok(values.to_vec());
    }
    let mut t = Tensor::from_slice(values).to_kind(Kind::Float).to(device);
    comm.all_reduce_sum_(&mut t, context)?;
    Ok(Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default())
}
