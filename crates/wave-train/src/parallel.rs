//! Data parallelism on top of a [`Communicator`]: the start-up agreement, the initial broadcast,
//! bucketed gradient averaging and metric reductions. With one rank every function is free.

use std::cell::Cell;
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

/// What one gradient synchronisation cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStats {
    /// Waiting at a barrier for the slowest rank to finish its backward pass (load imbalance).
    pub skew_s: f64,
    /// Flattening, all-reducing and unflattening the gradient buckets.
    pub reduce_s: f64,
    /// Bytes this rank put into the step's gradient collectives (all-reduce buffers, including
    /// the per-row flags of a row-sparse reduction).
    pub bytes: usize,
    /// Bytes the dense all-reduce of every gradient would have put in (4 per parameter).
    pub dense_bytes: usize,
}

/// A row-sparse table reduces only rows touched on some rank when their payload stays below
/// this fraction of the table: the sparse path also costs a scan of the table, a gather, a
/// scatter and one more (small) collective.
const SPARSE_MAX_FRACTION: f64 = 0.5;

/// After a step whose union was too large, the table is all-reduced densely, without the flags,
/// for this many steps before the union is measured again (every rank decides the same from the
/// same union, so no collective is needed to agree on it).
const DENSE_STEPS_AFTER_LARGE_UNION: u64 = 100;

/// The gradient buckets: a fixed partition of the parameters (in optimizer order) into runs of
/// about `bucket_bytes`, the same on every rank (checked once at start-up, names, shapes and
/// order), so no rank can ever reduce a bucket its peers lay out differently.
///
/// Tables named as row-sparse (the token embedding: a batch touches a few thousand of its tens
/// of thousands of rows, and the rest of its gradient is exactly zero) are reduced on their own,
/// each step: every rank finds the rows its gradient touches (non-zero anywhere in the row), the
/// ranks agree on the union (an all-reduce of one flag per row), and only those rows are summed
/// (gathered into one buffer, all-reduced, scattered back). Rows outside the union are zero
/// on every rank, which is what the dense sum gives them, so the optimizer sees the same gradient
/// (sums of touched rows may differ from the dense all-reduce in the last bit where the
/// collective adds more than two ranks in another order). Whether a table is sparse is measured,
/// not assumed: when the union is large (a language-model head tied to the embedding makes every
/// row's gradient non-zero), all ranks see the same union and take the dense all-reduce, and
/// keep to it without the flags for [`DENSE_STEPS_AFTER_LARGE_UNION`] steps.
pub struct GradientBuckets {
    params: Vec<Tensor>,
    /// Index ranges into `params`, one per bucket.
    buckets: Vec<std::ops::Range<usize>>,
    /// Indices into `params` of the row-sparse tables (2-D), reduced one by one, each with the
    /// first step at which its union is measured again (see [`DENSE_STEPS_AFTER_LARGE_UNION`]).
    row_sparse: Vec<(usize, Cell<u64>)>,
    dense_bytes: usize,
}

impl GradientBuckets {
    /// Lays out `params` (names in optimizer order) and proves every rank has the same layout.
    /// Parameters named in `row_sparse` are reduced by touched rows (see the type's docs);
    /// the others in buckets. Gradients are allocated (zero) for every parameter, so each step
    /// reduces every bucket even where a rank's micro-batches left some parameter untouched.
    pub fn new(
        comm: &Communicator,
        params: &[(String, Tensor)],
        bucket_bytes: usize,
        row_sparse: &[&str],
    ) -> Result<GradientBuckets, Error> {
        let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        allocate_grads(&tensors);
        let sparse: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, (name, t))| row_sparse.contains(&name.as_str()) && t.dim() == 2)
            .map(|(i, _)| i)
            .collect();
        let mut buckets = Vec::new();
        let mut start = 0;
        while start < tensors.len() {
            if sparse.contains(&start) {
                start += 1;
                continue;
            }
            let (mut end, mut bytes) = (start, 0);
            while end < tensors.len()
                && !sparse.contains(&end)
                && (end == start || bytes + 4 * tensors[end].numel() <= bucket_bytes)
            {
                bytes += 4 * tensors[end].numel();
                end += 1;
            }
            buckets.push(start..end);
            start = end;
        }
        let mut layout: Vec<String> = buckets
            .iter()
            .map(|r| {
                let members: Vec<String> = params[r.clone()]
                    .iter()
                    .map(|(n, t)| format!("{n}{:?}", t.size()))
                    .collect();
                members.join(",")
            })
            .collect();
        for &i in &sparse {
            layout.push(format!("rows of {}{:?}", params[i].0, params[i].1.size()));
        }
        let row_sparse = sparse.into_iter().map(|i| (i, Cell::new(0))).collect();
        comm.check_same("gradient bucket layout", layout.join(" | ").as_bytes())?;
        let dense_bytes = tensors.iter().map(|t| 4 * t.numel()).sum();
        Ok(GradientBuckets {
            params: tensors,
            buckets,
            row_sparse,
            dense_bytes,
        })
    }

    /// Sums the gradients over ranks: one all-reduce per bucket, and the touched rows of each
    /// row-sparse table (the trainer scales each rank's loss by 1 / the global unit count, so
    /// the sum is the global mean). Called once per optimizer step, after the last micro-batch.
    /// A barrier first separates waiting for slower ranks from the cost of the reduction itself
    /// (a stalled rank shows up as skew, not as a slow network).
    pub fn reduce(&self, comm: &Communicator, step: u64) -> Result<SyncStats, Error> {
        if comm.world_size() == 1 {
            return Ok(SyncStats {
                dense_bytes: self.dense_bytes,
                ..SyncStats::default()
            });
        }
        let started = Instant::now();
        comm.barrier(&format!("before the gradients of step {step}"))?;
        let skew_s = started.elapsed().as_secs_f64();
        let reduce_start = Instant::now();
        let context = format!("gradients of step {step}");
        let mut bytes = 0;
        for (i, measure_from) in &self.row_sparse {
            let grad = self.params[*i].grad();
            bytes += if step < measure_from.get() {
                all_reduce_table(comm, &grad, &context)?
            } else {
                let (sent, sparse) = reduce_rows(comm, &grad, &context)?;
                if !sparse {
                    measure_from.set(step + DENSE_STEPS_AFTER_LARGE_UNION);
                }
                sent
            };
        }
        for range in &self.buckets {
            let grads: Vec<Tensor> = self.params[range.clone()]
                .iter()
                .map(Tensor::grad)
                .collect();
            bytes += grads.iter().map(|g| 4 * g.numel()).sum::<usize>();
            tch::no_grad(|| -> Result<(), Error> {
                if grads.len() == 1 && grads[0].is_contiguous() {
                    // A tensor that fills a bucket alone is reduced where it lies.
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
        Ok(SyncStats {
            skew_s,
            reduce_s: reduce_start.elapsed().as_secs_f64(),
            bytes,
            dense_bytes: self.dense_bytes,
        })
    }
}

/// Sums the gradient `grad` `(rows, d)` of a row-sparse table over ranks, in place, by touched
/// rows when that moves fewer bytes (see [`GradientBuckets`]); returns the bytes this rank put
/// into the collectives and whether the rows alone were reduced.
///
/// The ranks agree on the union through one all-reduce of a per-row flag (1.0 where this rank's
/// row is non-zero): 4 bytes per table row whatever the number of ranks, and one collective with
/// the all-reduce's latency, where exchanging row ids would grow with the ranks and need
/// all-gathers, whose latency grows linearly with them.
fn reduce_rows(comm: &Communicator, grad: &Tensor, context: &str) -> Result<(usize, bool), Error> {
    let (rows, d) = (grad.size()[0], grad.size()[1]);
    let table_bytes = 4 * (rows * d) as usize;
    // A row is touched where its largest or smallest entry is non-zero (NaN counts): two
    // vectorised row reductions, several times faster than testing every entry.
    let mut flags = tch::no_grad(|| {
        grad.amax(1, false)
            .ne(0.0)
            .logical_or(&grad.amin(1, false).ne(0.0))
            .to_kind(Kind::Float)
    });
    comm.all_reduce_sum_(&mut flags, context)?;
    let sent = 4 * rows as usize;
    // Ascending row ids, the same on every rank (they all hold the same flags).
    let union = flags.gt(0.0).nonzero().reshape([-1]);
    let union_bytes = 4 * (union.size()[0] * d) as usize;
    if union_bytes as f64 > SPARSE_MAX_FRACTION * table_bytes as f64 {
        // Most rows are touched somewhere (always so under a tied language-model head).
        return Ok((sent + all_reduce_table(comm, grad, context)?, false));
    }
    tch::no_grad(|| -> Result<(), Error> {
        if union_bytes > 0 {
            let mut summed = grad.index_select(0, &union);
            comm.all_reduce_sum_(&mut summed, context)?;
            let _ = grad.shallow_clone().index_copy_(0, &union, &summed);
        }
        Ok(())
    })?;
    Ok((sent + union_bytes, true))
}

/// The dense all-reduce of a whole table's gradient, where it lies; returns the bytes sent.
fn all_reduce_table(comm: &Communicator, grad: &Tensor, context: &str) -> Result<usize, Error> {
    let mut flat = grad.view([-1]);
    tch::no_grad(|| comm.all_reduce_sum_(&mut flat, context))?;
    Ok(4 * grad.numel())
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
