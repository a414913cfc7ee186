//! Sample order: pure functions of (seed, epoch, global position), independent of world size.
//!
//! An epoch's order is built in two levels so that a shuffled epoch never needs the split in memory:
//! 1. every row group is cut into *blocks* of `shuffle_block` consecutive rows, and the split's
//!    blocks are dealt into `n = ceil(rows / shuffle_window)` *windows*, stratified: each run of `n`
//!    consecutive blocks (in storage order) gives every window one block, to a window drawn with an
//!    RNG derived from `(seed, epoch, run)`;
//! 2. windows follow each other, and the rows inside each are permuted with an RNG derived from
//!    `(seed, epoch, window)`.
//!
//! So every window is a systematic sample of the whole split, about `rows / n <= shuffle_window`
//! rows from every region of it, rather than a contiguous run of it: on a split stored sorted by
//! class, each window's class mix equals the split's to within one block per class boundary, and a
//! batch drawn from a window is as mixed as an i.i.d. shuffle makes it. Measured over a grid of both
//! knobs on sorted splits (`examples/order_quality.rs`, results in
//! `bench/results/order_quality.md`): with 32-row blocks the per-batch class-fraction spread is
//! 1.00x the i.i.d. value on average (worst seed 1.04x) at batch 64 and 256, windows of 4,096 to
//! 65,536 rows, splits of 23,750 to 1,000,000 rows and 2 to 14 classes; blocks of 8–64 rows do
//! alike. The order before (whole row groups permuted, windows of consecutive ones) gave 1.8x–2.2x
//! at batch 64 with windows of 16,384 rows. Whole row groups as blocks are not enough (up to
//! 3.7x): a window then holds too few blocks for one block to be a small error.
//!
//! The defaults are `shuffle_block = 32`, one data page as `prepare` writes them
//! ([`crate::PAGE_ROWS`], with an offset index), so a window reads exactly the pages of its blocks
//! (smaller blocks decode each page several times per epoch), and `shuffle_window = 32768`: a
//! window of memory (about 40 MB of IMDB reviews, 16 MB of 128-token packed rows) that covers a
//! split of up to 32,768 rows (IMDB, AG News' test set) in one exact uniform shuffle, and reads
//! each row group once per window, so larger windows mean fewer (object-store) requests.
//!
//! Compared with MosaicML Streaming's shuffles: `py1b` shuffles shards, then rows within
//! fixed-size blocks of the shuffled sequence, and `py1e` spreads each shard's samples over a range
//! around its shuffled place; in both a window of the sequence still draws from a handful of
//! adjacent shuffled shards, so a sorted source leaves windows skewed unless the block spans many
//! shards (MosaicML's default is 262,144 samples or more, cached on local disk). Dealing blocks of
//! a page into windows stratified across the split gets an i.i.d.-like class mix from a window of
//! modest memory, at the cost of reading a few pages from every row group per window.
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

/// A run of consecutive rows of one row group: the unit the epoch order permutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Row group (index into the split's row-group list).
    pub row_group: usize,
    /// First row of the block within its row group.
    pub offset: u64,
    /// Dataset row index (within the split) of its first row.
    pub first_row: u64,
    /// Rows.
    pub rows: u64,
}

/// A split's rows cut into blocks: every row group into runs of `block` rows (its last run may be
/// shorter), numbered in storage order.
#[derive(Debug, Clone)]
pub struct Blocks {
    block: u64,
    /// First dataset row of each row group, then the split's row count.
    rg_first_row: Vec<u64>,
    /// First block number of each row group, then the block count.
    rg_first_block: Vec<u64>,
}

impl Blocks {
    /// Cut row groups of `rg_rows[i]` rows into blocks of `block` rows (`u64::MAX`: one block per
    /// row group).
    pub fn new(rg_rows: &[u64], block: u64) -> Blocks {
        let block = block.max(1);
        let (mut rg_first_row, mut rg_first_block) = (vec![0], vec![0]);
        for &n in rg_rows {
            rg_first_row.push(rg_first_row[rg_first_row.len() - 1] + n);
            rg_first_block.push(rg_first_block[rg_first_block.len() - 1] + n.div_ceil(block));
        }
        Blocks {
            block,
            rg_first_row,
            rg_first_block,
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.rg_first_block[self.rg_first_block.len() - 1]
    }

    /// Whether there are no blocks (an empty split).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block number `b` (`b < len()`).
    pub fn get(&self, b: u64) -> BlockRef {
        let g = self.rg_first_block.partition_point(|&f| f <= b) - 1;
        let offset = (b - self.rg_first_block[g]) * self.block;
        let rg_rows = self.rg_first_row[g + 1] - self.rg_first_row[g];
        BlockRef {
            row_group: g,
            offset,
            first_row: self.rg_first_row[g] + offset,
            rows: self.block.min(rg_rows - offset),
        }
    }
}

/// Consecutive blocks of the epoch order whose rows are shuffled together.
#[derive(Debug, Clone)]
pub struct Window {
    /// First epoch position of the window.
    pub start: u64,
    /// Total rows.
    pub rows: u64,
    /// Its blocks: a range of [`EpochPlan::order`].
    pub blocks: Range<usize>,
}

/// The epoch-level plan: block permutation and windows. Row order inside a window comes from
/// [`window_permutation`]; [`EpochPlan::window_rows`] gives the resulting dataset rows.
#[derive(Debug, Clone)]
pub struct EpochPlan {
    /// The split's blocks.
    pub blocks: Blocks,
    /// Block numbers in epoch order.
    pub order: Vec<u32>,
    /// Windows in epoch order.
    pub windows: Vec<Window>,
    /// Whether rows are shuffled at all.
    pub shuffle: bool,
    /// Seed the plan was built for.
    pub seed: u64,
    /// Epoch number.
    pub epoch: u64,
}

impl EpochPlan {
    /// Build the plan for one epoch of a split whose row groups hold `rg_rows[i]` rows each.
    /// Shuffled: the split's blocks of `shuffle_block` rows are dealt into `ceil(rows /
    /// shuffle_window)` windows, stratified: every run of that many consecutive blocks (in storage
    /// order) gives each window one block, to a window drawn at random. Without shuffling every row
    /// group is a window of its own, in storage order.
    pub fn new(
        rg_rows: &[u64],
        seed: u64,
        epoch: u64,
        shuffle: bool,
        shuffle_window: usize,
        shuffle_block: usize,
    ) -> Self {
        let total: u64 = rg_rows.iter().sum();
        // Block numbers are u32: beyond 2^31 blocks the blocks grow instead.
        let block = if shuffle {
            (shuffle_block.max(1) as u64).max(total.div_ceil(1 << 31))
        } else {
            u64::MAX
        };
        let blocks = Blocks::new(rg_rows, block);
        let nb = blocks.len() as usize;
        let (order, bounds): (Vec<u32>, Vec<usize>) = if shuffle {
            let n_w = (total.div_ceil(shuffle_window.max(1) as u64) as usize).clamp(1, nb.max(1));
            // Stratum s = blocks [s*n_w, (s+1)*n_w): its blocks go to distinct windows, at random.
            let mut window_of = vec![0u32; nb];
            let mut slots: Vec<u32> = (0..n_w as u32).collect();
            for (s, stratum) in window_of.chunks_mut(n_w).enumerate() {
                SplitMix64::derive(seed, &[epoch, 0, s as u64]).shuffle(&mut slots);
                stratum.copy_from_slice(&slots[..stratum.len()]);
            }
            // Blocks grouped by window, each window's in storage order (its rows are permuted).
            let mut bounds = vec![0usize; n_w + 1];
            for &w in &window_of {
                bounds[w as usize + 1] += 1;
            }
            for w in 0..n_w {
                bounds[w + 1] += bounds[w];
            }
            let mut next = bounds.clone();
            let mut order = vec![0u32; nb];
            for (b, &w) in window_of.iter().enumerate() {
                order[next[w as usize]] = b as u32;
                next[w as usize] += 1;
            }
            (order, bounds)
        } else {
            ((0..nb as u32).collect(), (0..=nb).collect())
        };
        let mut windows = Vec::with_capacity(bounds.len().saturating_sub(1));
        let mut start = 0;
        for range in bounds.windows(2) {
            let rows: u64 = order[range[0]..range[1]]
                .iter()
                .map(|&b| blocks.get(u64::from(b)).rows)
                .sum();
            windows.push(Window {
                start,
                rows,
                blocks: range[0]..range[1],
            });
            start += rows;
        }
        EpochPlan {
            blocks,
            order,
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

    /// The blocks of window `w`, in window order.
    pub fn window_blocks(&self, w: usize) -> impl Iterator<Item = BlockRef> + '_ {
        self.order[self.windows[w].blocks.clone()]
            .iter()
            .map(|&b| self.blocks.get(u64::from(b)))
    }

    /// Dataset row at every position of window `w`, in epoch order (what the loader streams,
    /// before length bucketing).
    pub fn window_rows(&self, w: usize) -> Vec<u64> {
        let blocks: Vec<BlockRef> = self.window_blocks(w).collect();
        let mut starts = Vec::with_capacity(blocks.len());
        let mut acc = 0;
        for b in &blocks {
            starts.push(acc);
            acc += b.rows;
        }
        window_permutation(self, w)
            .into_iter()
            .map(|r| {
                let r = u64::from(r);
                let k = starts.partition_point(|&s| s <= r) - 1;
                blocks[k].first_row + (r - starts[k])
            })
            .collect()
    }

    /// Dataset row at every position of the epoch.
    pub fn epoch_rows(&self) -> Vec<u64> {
        (0..self.windows.len())
            .flat_map(|w| self.window_rows(w))
            .collect()
    }
}

/// Row permutation of window `w` of `plan`: entry `i` is the window-local row (rows of the window's
/// blocks concatenated in window order) placed at window position `i`.
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

/// How far per-batch class mixes stray from the split's, next to what an i.i.d. shuffle gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSpread {
    /// Full batches measured.
    pub batches: usize,
    /// Per-batch class-fraction standard deviation, root mean square over classes.
    pub std: f64,
    /// The same for an i.i.d. shuffle: `sqrt(mean_c p_c (1 - p_c) / B)`.
    pub iid: f64,
    /// The batch whose class mix strays furthest (sum of squared fraction deviations): its index
    /// and its count per class.
    pub worst: Option<(usize, Vec<u64>)>,
    /// Overall fraction of each class.
    pub fractions: Vec<f64>,
}

/// [`ClassSpread`] of the full batches of `batch` labels (`0..classes`) taken in order.
pub fn class_spread(labels: &[i64], classes: usize, batch: usize) -> ClassSpread {
    let count = |xs: &[i64]| {
        let mut c = vec![0u64; classes];
        for &l in xs {
            if let Some(slot) = usize::try_from(l).ok().and_then(|i| c.get_mut(i)) {
                *slot += 1;
            }
        }
        c
    };
    let n = labels.len().max(1) as f64;
    let fractions: Vec<f64> = count(labels).iter().map(|&k| k as f64 / n).collect();
    let (mut var, mut worst, mut worst_dev) = (vec![0.0; classes], None, -1.0);
    let batches = labels.len() / batch.max(1);
    for (i, b) in labels.chunks_exact(batch.max(1)).enumerate() {
        let counts = count(b);
        let mut dev = 0.0;
        for (c, &k) in counts.iter().enumerate() {
            let d = (k as f64 / batch as f64 - fractions[c]).powi(2);
            var[c] += d;
            dev += d;
        }
        if dev > worst_dev {
            (worst_dev, worst) = (dev, Some((i, counts)));
        }
    }
    let k = classes.max(1) as f64;
    let std = (var.iter().sum::<f64>() / batches.max(1) as f64 / k).sqrt();
    let iid =
        (fractions.iter().map(|p| p * (1.0 - p)).sum::<f64>() / batch.max(1) as f64 / k).sqrt();
    ClassSpread {
        batches,
        std,
        iid,
        worst,
        fractions,
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
        let plan = EpochPlan::new(&rg, 3, 1, true, 8, 2);
        assert_eq!(plan.windows.iter().map(|w| w.rows).sum::<u64>(), 25);
        assert_eq!(plan.window_of(0), 0);
        assert_eq!(plan.window_of(24), plan.windows.len() - 1);
        // 3 + 4 + 2 + 5 + 1 blocks of at most 2 rows, each used once, dealt into ceil(25/8) = 4
        // windows of 3 or 4 blocks.
        assert_eq!(plan.blocks.len(), 15);
        assert_eq!(plan.windows.len(), 4);
        assert!(plan
            .windows
            .iter()
            .all(|w| (3..=4).contains(&w.blocks.len())));
        let mut rows = plan.epoch_rows();
        rows.sort_unstable();
        assert_eq!(rows, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn every_window_takes_one_block_from_each_run_of_consecutive_blocks() {
        // 64 one-row blocks in 8 windows: window w holds exactly one of blocks 8s..8s+8 for all s.
        let plan = EpochPlan::new(&[64], 5, 2, true, 8, 1);
        assert_eq!(plan.windows.len(), 8);
        for w in 0..8 {
            let mut strata: Vec<u64> = plan.window_rows(w).iter().map(|r| r / 8).collect();
            strata.sort_unstable();
            assert_eq!(strata, (0..8).collect::<Vec<_>>(), "window {w}");
        }
        let other = EpochPlan::new(&[64], 5, 3, true, 8, 1);
        assert_ne!(plan.epoch_rows(), other.epoch_rows(), "epochs differ");
    }

    #[test]
    fn blocks_cut_row_groups_and_never_cross_them() {
        let b = Blocks::new(&[5, 3], 2);
        let all: Vec<BlockRef> = (0..b.len()).map(|i| b.get(i)).collect();
        let want = [
            (0, 0, 0, 2),
            (0, 2, 2, 2),
            (0, 4, 4, 1),
            (1, 0, 5, 2),
            (1, 2, 7, 1),
        ];
        assert_eq!(all.len(), want.len());
        for (got, &(row_group, offset, first_row, rows)) in all.iter().zip(&want) {
            assert_eq!(
                *got,
                BlockRef {
                    row_group,
                    offset,
                    first_row,
                    rows
                }
            );
        }
    }

    #[test]
    fn class_spread_is_zero_for_perfect_mixes_and_large_for_sorted_runs() {
        let alternating: Vec<i64> = (0..640).map(|i| i % 2).collect();
        let s = class_spread(&alternating, 2, 64);
        assert_eq!((s.batches, s.std), (10, 0.0));
        assert!((s.iid - 0.0625).abs() < 1e-12, "sqrt(0.25 / 64)");
        let sorted: Vec<i64> = (0..640).map(|i| i / 320).collect();
        let s = class_spread(&sorted, 2, 64);
        assert!((s.std - 0.5).abs() < 1e-12, "every batch is all one class");
        assert_eq!(s.worst, Some((0, vec![64, 0])));
        assert_eq!(s.fractions, [0.5, 0.5]);
    }

    #[test]
    fn without_shuffle_every_row_group_is_a_window_in_storage_order() {
        let plan = EpochPlan::new(&[4, 2, 3], 9, 0, false, 100, 2);
        assert_eq!(plan.windows.len(), 3);
        assert_eq!(plan.epoch_rows(), (0..9).collect::<Vec<_>>());
    }
}
