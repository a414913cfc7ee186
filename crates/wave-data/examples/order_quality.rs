//! How close the loader's order comes to an i.i.d. shuffle on a split stored sorted by class, and
//! what it costs in reads, for a grid of `shuffle_block` × `shuffle_window`. Pure computation on
//! the order functions (no data read), so it measures the order itself.
//!
//! ```text
//! cargo run --release -p wave-data --example order_quality > bench/results/order_quality.md
//! ```
//! Per cell: the per-batch class-fraction standard deviation over an epoch divided by the i.i.d.
//! value `sqrt(p(1-p)/B)` (mean and worst over 5 seeds), and the row-group reads per epoch. Row
//! groups hold 1,024 rows and data pages [`wave_data::PAGE_ROWS`] rows, as `prepare` writes them.
//! The first row of each table is the order before blocks and stratified windows existed.

use wave_data::order::{EpochPlan, SplitMix64};

const RG_ROWS: u64 = 1024;
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// Per-batch class-fraction std (RMS over classes) / its i.i.d. value.
fn ratio(labels: &[u32], classes: u32, batch: usize) -> f64 {
    let batches: Vec<&[u32]> = labels.chunks_exact(batch).collect();
    let (mut measured, mut iid) = (0.0, 0.0);
    for c in 0..classes {
        let p = labels.iter().filter(|&&l| l == c).count() as f64 / labels.len() as f64;
        measured += batches
            .iter()
            .map(|b| (b.iter().filter(|&&l| l == c).count() as f64 / batch as f64 - p).powi(2))
            .sum::<f64>()
            / batches.len() as f64;
        iid += p * (1.0 - p) / batch as f64;
    }
    (measured / iid).sqrt()
}

fn row_groups(rows: u64) -> Vec<u64> {
    let mut rg_rows = vec![RG_ROWS; (rows / RG_ROWS) as usize];
    if !rows.is_multiple_of(RG_ROWS) {
        rg_rows.push(rows % RG_ROWS);
    }
    rg_rows
}

/// The order before: row groups permuted, cut into windows of at least `window` rows, rows
/// permuted inside each window. Returns dataset rows in epoch order.
fn previous_order(rg_rows: &[u64], seed: u64, window: u64) -> Vec<u64> {
    let mut first = vec![0u64];
    for &n in rg_rows {
        first.push(first[first.len() - 1] + n);
    }
    let mut groups: Vec<usize> = (0..rg_rows.len()).collect();
    SplitMix64::derive(seed, &[0, 0]).shuffle(&mut groups);
    let (mut out, mut cur) = (Vec::new(), Vec::new());
    for (i, &g) in groups.iter().enumerate() {
        cur.extend(first[g]..first[g + 1]);
        if cur.len() as u64 >= window || i + 1 == groups.len() {
            SplitMix64::derive(seed, &[0, 1, i as u64]).shuffle(&mut cur);
            out.append(&mut cur);
        }
    }
    out
}

/// (mean ratio, worst ratio, row-group reads per epoch, pages decoded per page stored).
fn measure(
    rows: u64,
    classes: u32,
    batch: usize,
    window: usize,
    block: usize,
) -> (f64, f64, f64, f64) {
    let rg_rows = row_groups(rows);
    let label = |r: u64| (r * u64::from(classes) / rows) as u32;
    let page_rows = wave_data::PAGE_ROWS as u64;
    let pages_stored: u64 = rg_rows.iter().map(|n| n.div_ceil(page_rows)).sum();
    let (mut sum, mut worst, mut reads, mut pages) = (0.0, 0.0f64, 0.0, 0.0);
    for &seed in &SEEDS {
        let plan = EpochPlan::new(&rg_rows, seed, 0, true, window, block);
        let labels: Vec<u32> = plan.epoch_rows().into_iter().map(label).collect();
        let r = ratio(&labels, classes, batch);
        sum += r;
        worst = worst.max(r);
        for w in 0..plan.windows.len() {
            // One read per row group a window touches; it decodes the pages its blocks overlap.
            let mut touched: Vec<(usize, u64)> = Vec::new();
            for b in plan.window_blocks(w) {
                let first = b.offset / page_rows;
                let last = (b.offset + b.rows - 1) / page_rows;
                touched.extend((first..=last).map(|p| (b.row_group, p)));
            }
            touched.sort_unstable();
            touched.dedup();
            let mut groups: Vec<usize> = touched.iter().map(|&(g, _)| g).collect();
            groups.dedup();
            reads += groups.len() as f64;
            pages += touched.len() as f64;
        }
    }
    let n = SEEDS.len() as f64;
    (sum / n, worst, reads / n, pages / n / pages_stored as f64)
}

fn main() {
    let blocks = [8usize, 16, 32, 64, 128, 1024];
    let windows = [4096usize, 8192, 16384, 32768, 65536];
    println!("# Loader order quality on class-sorted splits\n");
    println!(
        "Command: `cargo run --release -p wave-data --example order_quality` (pure computation on \
         `wave_data::order`, no data read; {} seeds per cell). Splits stored sorted by class, row \
         groups of {RG_ROWS} rows, data pages of {} rows. Cell: per-batch class-fraction std / \
         i.i.d. value (mean over seeds, worst in brackets); `reads`: row-group reads per epoch; \
         `pages`: pages decoded per epoch / pages stored. `previous order`: whole row groups \
         permuted, windows of consecutive ones (the order before blocks and stratified windows).\n",
        SEEDS.len(),
        wave_data::PAGE_ROWS
    );
    for (rows, classes, batch) in [
        (23_750u64, 2u32, 64usize),
        (200_000, 2, 64),
        (200_000, 4, 64),
        (200_000, 2, 256),
        (1_000_000, 14, 64),
    ] {
        println!("## {rows} rows, {classes} classes, batch {batch}\n");
        print!("| shuffle_block \\ shuffle_window |");
        for w in windows {
            print!(" {w} |");
        }
        print!("\n|---|");
        for _ in windows {
            print!("---|");
        }
        println!();
        print!("| previous order |");
        for w in windows {
            let label = |r: u64| (r * u64::from(classes) / rows) as u32;
            let ratios: Vec<f64> = SEEDS
                .iter()
                .map(|&seed| {
                    let order = previous_order(&row_groups(rows), seed, w as u64);
                    let labels: Vec<u32> = order.into_iter().map(label).collect();
                    ratio(&labels, classes, batch)
                })
                .collect();
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            let worst = ratios.iter().copied().fold(0.0, f64::max);
            print!(" {mean:.2} ({worst:.2}) |");
        }
        println!();
        for b in blocks {
            print!("| {b} |");
            for w in windows {
                let (mean, worst, reads, pages) = measure(rows, classes, batch, w, b);
                print!(" {mean:.2} ({worst:.2}); reads {reads:.0}, pages {pages:.2} |");
            }
            println!();
        }
        println!();
    }
}
