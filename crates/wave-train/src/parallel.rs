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

/// Rank 0's parameters to every rank (identical start even if initialisation were not seeded).
pub fn broadcast_parameters(comm: &Communicator, params: &[(String, Tensor)]) -> Result<(), Error> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    tch::no_grad(|| {
        for (_, p) in params {
            let mut p = p.shallow_clone();
            comm.broadcast_(&mut p, "initial parameters")?;
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

/// Averages the gradients over ranks: flattened into buckets of about `bucket_bytes`, one sum
/// all-reduce each (the trainer scales the loss by `1 / world`, so the sum is the mean without
/// another pass over memory). Called once per optimizer step, after the last micro-batch. A barrier first
/// separates waiting for slower ranks from the cost of the reduction itself (one small message
/// per step; a stalled rank then shows up as skew, not as a slow network).
pub fn average_gradients(
    comm: &Communicator,
    params: &[Tensor],
    bucket_bytes: usize,
    step: u64,
) -> Result<SyncTimes, Error> {
    if comm.world_size() == 1 {
        return Ok(SyncTimes::default());
    }
    let started = Instant::now();
    comm.barrier(&format!("before the gradients of step {step}"))?;
    let skew_s = started.elapsed().as_secs_f64();
    let reduce_start = Instant::now();
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    let context = format!("gradients of step {step}");
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < grads.len() && (end == start || bytes + 4 * grads[end].numel() <= bucket_bytes)
        {
            bytes += 4 * grads[end].numel();
            end += 1;
        }
        tch::no_grad(|| -> Result<(), Error> {
            if end - start == 1 && grads[start].is_contiguous() {
                // A tensor that fills a bucket alone (the embedding) is reduced where it lies.
                let mut view = grads[start].view([-1]);
                return Ok(comm.all_reduce_sum_(&mut view, &context)?);
            }
            let flat: Vec<Tensor> = grads[start..end].iter().map(|g| g.reshape([-1])).collect();
            let mut bucket = Tensor::cat(&flat, 0);
            comm.all_reduce_sum_(&mut bucket, &context)?;
            let mut offset = 0;
            for g in &grads[start..end] {
                let n = g.numel() as i64;
                let mut view = g.view([-1]);
                view.copy_(&bucket.narrow(0, offset, n));
                offset += n;
            }
            Ok(())
        })?;
        start = end;
    }
    Ok(SyncTimes {
        skew_s,
        reduce_s: reduce_start.elapsed().as_secs_f64(),
    })
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

/// The mean of one number over ranks (each rank's window loss, for example).
pub fn mean_over_ranks(
    comm: &Communicator,
    value: f64,
    device: Device,
    context: &str,
) -> Result<f64, Error> {
    Ok(sum_over_ranks(comm, &[value], device, context)?[0] / comm.world_size() as f64)
}
