//! Sample order: pure functions of (seed, epoch, global position), independent of world size.
//!
//! An epoch's order is built in two levels so that a shuffled epoch never needs the corpus in memory:
//! 1. the split's row groups are permuted with an RNG derived from `(seed, epoch)`;
//! 2. consecutive permuted row groups are grouped into *windows* of at least `shuffle_window` rows,
//!    and the rows inside each window are permuted with an RNG derived from `(seed, epoch, window)`.
//!
//! Global batch `k` covers positions `[k*B, (k+1)*B)` of that order; rank `r` of `W` takes the
//! contiguous slice `[r*B/W, (r+1)*B/W)` ([`rank_slice`]). Because batches are cut from positions, a
//! run saved at one world size resumes at another by position alone.
//!
//! The RNG is this crate's own [`SplitMix64`] with Fisher–Yates shuffling, so an upgrade of a
//! dependency can never change the order of a seeded run.

use std::ops::Range;

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, well-mixed 64-bit generator. Kept in-crate so the
/// data order of a seed is stable forever.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator for one independent stream, e.g. `derive(seed, &[epoch, window])`.
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        let mut state = mix64(seed ^ GOLDEN);
        for (i, s) in stream.iter().enumerate() {
            state = mix64(state ^ mix64(s.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))));
        }
        SplitMix64 { state }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform integer in `0..n` (`n > 0`), unbiased (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// Number of batches every rank gets per epoch when the remainder is *not* padded: the full global
/// batches plus one partial batch when the `R = rows % global_batch` leftover samples give every rank
/// at least one (`floor(R/W)` each; at most `W-1` samples are dropped).
pub fn batches_per_epoch(rows: u64, global_batch: usize, world_size: usize) -> u64 {
    if global_batch == 0 || world_size == 0 {
        return 0;
    }
    let full = rows / global_batch as u64;
    let rem = rows % global_batch as u64;
    full + u64::from(rem / world_size as u64 > 0)
}

/// Like [`batches_per_epoch`] but with the last partial batch padded (eval): every sample is seen once.
pub fn batches_per_epoch_padded(rows: u64, global_batch: usize) -> u64 {
    if global_batch == 0 {
        return 0;
    }
    rows.div_ceil(global_batch as u64)
}

/// One rank's share of the next global batch, starting at global position `pos` of an epoch of
/// `rows` samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankSlice {
    /// Epoch positions this rank reads.
    pub positions: Range<u64>,
    /// Padding rows to append (only with `pad_remainder`).
    pub pad_rows: usize,
    /// Global position after this batch; `>= rows` means the epoch is finished.
    pub next_pos: u64,
}

/// Cut the next global batch at `pos` and slice it for `rank` of `world_size`.
/// Returns `None` when the epoch has no further batch (done, or a remainder smaller than the world
/// size without padding).
pub fn rank_slice(
    rows: u64,
    pos: u64,
    global_batch: usize,
    rank: usize,
    world_size: usize,
    pad_remainder: bool,
) -> Option<RankSlice> {
    let (b, w, r) = (global_batch as u64, world_size as u64, rank as u64);
    let left = rows.saturating_sub(pos);
    if left == 0 || w == 0 || b == 0 {
        return None;
    }
    if left >= b {
        let per = b / w;
        let start = pos + r * per;
        return Some(RankSlice {
            positions: start..start + per,
            pad_rows: 0,
            next_pos: pos + b,
        });
    }
    if pad_remainder {
        let per = left.div_ceil(w);
        let start = (pos + r * per).min(rows);
        let end = (start + per).min(rows);
        Some(RankSlice {
            positions: start..end,
            pad_rows: (per - (end - start)) as usize,
            next_pos: rows,
        })
    } else {
        let per = left / w;
        if per == 0 {
            return None;
        }
        let start = pos + r * per;
        Some(RankSlice {
            positions: start..start + per,
            pad_rows: 0,
            next_pos: rows,
        })
    }
}

/// A window of consecutive (permuted) row groups whose rows are shuffled together.
#[derive(Debug, Clone)]
pub struct Window {
    /// First epoch position of the window.
    pub start: u64,
    /// Row groups (indices into the split's row-group list), in window order.
    pub row_groups: Vec<usize>,
    /// Total rows.
    pub rows: u64,
}

/// The epoch-level plan: row-group permutation and windows. Row order inside a window comes from
/// [`window_permutation`].
#[derive(Debug, Clone)]
pub struct EpochPlan {
    /// Windows in epoch order.
    pub windows: Vec<Window>,
    /// Whether rows are shuffled at all.
    pub shuffle: bool,
    /// Seed and epoch the plan was built for.
    pub seed: u64,
    /// Epoch number.
    pub epoch: u64,
}

impl EpochPlan {
    /// Build the plan for one epoch of a split whose row groups hold `rg_rows[i]` rows each.
    /// Without shuffling the whole split is one window in storage order.
    pub fn new(
        rg_rows: &[u64],
        seed: u64,
        epoch: u64,
        shuffle: bool,
        shuffle_window: usize,
    ) -> Self {
        let mut order: Vec<usize> = (0..rg_rows.len()).collect();
        let mut windows = Vec::new();
        if shuffle {
            SplitMix64::derive(seed, &[epoch, 0]).shuffle(&mut order);
            let mut cur = Window {
                start: 0,
                row_groups: Vec::new(),
                rows: 0,
            };
            for rg in order {
                cur.row_groups.push(rg);
                cur.rows += rg_rows[rg];
                if cur.rows >= shuffle_window.max(1) as u64 {
                    let start = cur.start + cur.rows;
                    windows.push(std::mem::replace(
                        &mut cur,
                        Window {
                            start,
                            row_groups: Vec::new(),
                            rows: 0,
                        },
                    ));
                }
            }
            if !cur.row_groups.is_empty() {
                windows.push(cur);
            }
        } else {
            windows.push(Window {
                start: 0,
                row_groups: order,
                rows: rg_rows.iter().sum(),
            });
        }
        EpochPlan {
            windows,
            shuffle,
            seed,
            epoch,
        }
    }

    /// Index of the window holding epoch position `pos`.
    pub fn window_of(&self, pos: u64) -> usize {
        self.windows.partition_point(|w| w.start + w.rows <= pos)
    }
}

/// Row permutation of window `w` of `plan`: entry `i` is the window-local row (rows of the window's
/// row groups concatenated in window order) placed at window position `i`.
pub fn window_permutation(plan: &EpochPlan, w: usize) -> Vec<u32> {
    let n = plan.windows.get(w).map_or(0, |x| x.rows) as u32;
    let mut perm: Vec<u32> = (0..n).collect();
    if plan.shuffle {
        SplitMix64::derive(plan.seed, &[plan.epoch, 1, w as u64]).shuffle(&mut perm);
    }
    perm
}

/// Length bucketing inside a window (`bucket_by_length`): rows of the shuffled window are sorted by
/// length (stable, so ties keep their shuffled order), cut at the global-batch boundaries of the epoch
/// (`window_start` is the window's first epoch position), and the complete chunks are shuffled among
/// themselves so that consecutive batches do not grow monotonically. The partial chunks at the window
/// edges stay in place. `lengths[i]` is the length of window-local row `i`.
pub fn bucket_by_length(
    perm: &mut [u32],
    lengths: &[usize],
    window_start: u64,
    global_batch: usize,
    seed: u64,
    epoch: u64,
    window: usize,
) {
    perm.sort_by_key(|&i| lengths.get(i as usize).copied().unwrap_or(0));
    let b = global_batch.max(1) as u64;
    let head = ((b - window_start % b) % b).min(perm.len() as u64) as usize;
    let body = &mut perm[head..];
    let chunks = body.len() / global_batch.max(1);
    if chunks < 2 {
        return;
    }
    let mut ids: Vec<usize> = (0..chunks).collect();
    SplitMix64::derive(seed, &[epoch, 2, window as u64]).shuffle(&mut ids);
    let bs = global_batch.max(1);
    let src: Vec<u32> = body[..chunks * bs].to_vec();
    for (dst, &from) in ids.iter().enumerate() {
        body[dst * bs..(dst + 1) * bs].copy_from_slice(&src[from * bs..(from + 1) * bs]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_pinned() {
        // Guards the order of every seeded run: these values must never change.
        let mut r = SplitMix64::derive(0, &[]);
        let a = r.next_u64();
        let mut r2 = SplitMix64::derive(0, &[]);
        assert_eq!(a, r2.next_u64());
        let mut p: Vec<u32> = (0..10).collect();
        SplitMix64::derive(42, &[0, 0]).shuffle(&mut p);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(p, sorted);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::derive(7, &[1]);
        for n in 1..200u64 {
            assert!(r.below(n) < n);
        }
    }

    #[test]
    fn slices_cover_the_batch() {
        for w in 1..5usize {
            let b = 12;
            let mut seen = Vec::new();
            for r in 0..w {
                let s = rank_slice(30, 24, b, r, w, true).expect("batch");
                seen.extend(s.positions.clone());
                assert_eq!(
                    s.positions.end - s.positions.start + s.pad_rows as u64,
                    6u64.div_ceil(w as u64)
                );
            }
            assert_eq!(seen, (24..30).collect::<Vec<_>>());
        }
    }

    #[test]
    fn windows_partition_all_rows() {
        let rg = [5u64, 7, 3, 9, 1];
        let plan = EpochPlan::new(&rg, 3, 1, true, 8);
        assert_eq!(plan.windows.iter().map(|w| w.rows).sum::<u64>(), 25);
        assert_eq!(plan.window_of(0), 0);
        assert_eq!(plan.window_of(24), plan.windows.len() - 1);
    }
}
