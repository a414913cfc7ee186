//! The external shuffle behind `prepare`: records are spooled to temporary bucket files by a 64-bit
//! key, then read back in key order with bounded memory.
//!
//! The order is **sort by `(key, ordinal)`**, whatever the number of buckets: bucket `b` holds the
//! keys whose top bits are `b`, buckets are drained in order and each is sorted in memory. A bucket
//! larger than the memory budget is scattered again by the next 8 key bits (recursively), which
//! changes the work, never the order. With a seeded hash of the record's ordinal as the key the
//! result is a uniformly random permutation; with the ordinal itself (one bucket, drained as
//! written) it is the source order.
//!
//! Spool record layout (little endian): `key u64 | ordinal u64 | split u16 | label u32 | len u32 |
//! text (len bytes of UTF-8)`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes of a spooled record before its text.
const HEADER: usize = 8 + 8 + 2 + 4 + 4;
/// Write buffer per bucket file.
const BUFFER: usize = 64 << 10;
/// Key bits taken by each re-scatter of an oversized bucket.
const RESPLIT_BITS: u32 = 8;

/// One record in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spooled<'a> {
    /// Sort key.
    pub key: u64,
    /// Position in its source split (breaks key ties; unique per split).
    pub ordinal: u64,
    /// Index of its source split.
    pub split: u16,
    /// Provisional label id (`u32::MAX`: none).
    pub label: u32,
    /// The text.
    pub text: &'a str,
}

fn write_record(w: &mut impl Write, r: &Spooled<'_>) -> std::io::Result<()> {
    let len = u32::try_from(r.text.len())
        .map_err(|_| std::io::Error::other("a single text exceeds 4 GiB"))?;
    w.write_all(&r.key.to_le_bytes())?;
    w.write_all(&r.ordinal.to_le_bytes())?;
    w.write_all(&r.split.to_le_bytes())?;
    w.write_all(&r.label.to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(r.text.as_bytes())
}

/// `(key, ordinal, split, label, text length)` of a header.
fn parse_header(h: &[u8]) -> (u64, u64, u16, u32, usize) {
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or([0; 4]));
    (
        u64_at(0),
        u64_at(8),
        u16::from_le_bytes([h[16], h[17]]),
        u32_at(18),
        u32_at(22) as usize,
    )
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("spool file {what}"),
        ),
    )
}

/// Read the next record of a spool file into `buf` (text), returning its header fields.
fn read_record(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<Option<(u64, u64, u16, u32)>> {
    let mut h = [0u8; HEADER];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    }
    let (key, ordinal, split, label, len) = parse_header(&h);
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|e| Error::io(path, e))?;
    Ok(Some((key, ordinal, split, label)))
}

/// Bucket files being written.
pub(crate) struct Spool {
    bits: u32,
    paths: Vec<PathBuf>,
    writers: Vec<BufWriter<File>>,
    records: u64,
    bytes: u64,
}

fn create_buckets(dir: &Path, n: usize) -> Result<(Vec<PathBuf>, Vec<BufWriter<File>>)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::with_capacity(n);
    let mut writers = Vec::with_capacity(n);
    for i in 0..n {
        let p = dir.join(format!("bucket-{i:03}"));
        let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
        writers.push(BufWriter::with_capacity(BUFFER, f));
        paths.push(p);
    }
    Ok((paths, writers))
}

/// Flush and close bucket files (no fsync: a spool that does not survive a crash is just redone).
fn close(paths: &[PathBuf], writers: Vec<BufWriter<File>>) -> Result<()> {
    for (p, w) in paths.iter().zip(writers) {
        w.into_inner().map_err(|e| Error::io(p, e.into_error()))?;
    }
    Ok(())
}

impl Spool {
    /// `2^bits` empty bucket files in `dir` (`bits <= 16`).
    pub fn create(dir: &Path, bits: u32) -> Result<Spool> {
        let (paths, writers) = create_buckets(dir, 1 << bits.min(16))?;
        Ok(Spool {
            bits: bits.min(16),
            paths,
            writers,
            records: 0,
            bytes: 0,
        })
    }

    /// Append a record to the bucket of its key's top `bits` bits.
    pub fn push(&mut self, r: &Spooled<'_>) -> Result<()> {
        let b = if self.bits == 0 {
            0
        } else {
            (r.key >> (64 - self.bits)) as usize
        };
        write_record(&mut self.writers[b], r).map_err(|e| Error::io(&self.paths[b], e))?;
        self.records += 1;
        self.bytes += (HEADER + r.text.len()) as u64;
        Ok(())
    }

    /// Records and bytes spooled so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.records, self.bytes)
    }

    /// Flush and close every bucket.
    pub fn finish(self) -> Result<Buckets> {
        close(&self.paths, self.writers)?;
        Ok(Buckets {
            bits: self.bits,
            paths: self.paths,
        })
    }
}

/// Closed bucket files, ready to be drained (each file is removed once read).
pub(crate) struct Buckets {
    bits: u32,
    paths: Vec<PathBuf>,
}

impl Buckets {
    /// Every record in `(key, ordinal)` order, holding at most about `budget` bytes of spool in
    /// memory at a time.
    pub fn drain_sorted(
        self,
        budget: u64,
        f: &mut dyn FnMut(Spooled<'_>) -> Result<()>,
    ) -> Result<()> {
        for p in &self.paths {
            drain_bucket(p, self.bits, budget, f)?;
        }
        Ok(())
    }

    /// Every record in the order it was pushed (a spool of one bucket).
    pub fn drain_in_order(self, f: &mut dyn FnMut(Spooled<'_>) -> Result<()>) -> Result<()> {
        let mut buf = Vec::new();
        for p in &self.paths {
            let file = File::open(p).map_err(|e| Error::io(p, e))?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            while let Some((key, ordinal, split, label)) = read_record(&mut r, &mut buf, p)? {
                let text =
                    std::str::from_utf8(&buf).map_err(|_| corrupt(p, "holds invalid UTF-8"))?;
                f(Spooled {
                    key,
                    ordinal,
                    split,
                    label,
                    text,
                })?;
            }
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
        Ok(())
    }
}

/// Whether a spool file holds one record (which no re-scatter could split).
fn single_record(path: &Path, size: u64) -> Result<bool> {
    let mut h = [0u8; HEADER];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut h))
        .map_err(|e| Error::io(path, e))?;
    Ok((HEADER + parse_header(&h).4) as u64 == size)
}

/// Drain one bucket whose keys share their top `used` bits: sorted in memory when it fits the
/// budget, else scattered by the next key bits into sub-buckets drained in turn.
fn drain_bucket(
    path: &Path,
    used: u32,
    budget: u64,
    f: &mut dyn FnMut(Spooled<'_>) -> Result<()>,
) -> Result<()> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > budget && used < 64 && !single_record(path, size)? {
        let take = (64 - used).min(RESPLIT_BITS);
        let dir = path.with_extension("split");
        let (paths, mut writers) = create_buckets(&dir, 1 << take)?;
        {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            let mut buf = Vec::new();
            while let Some((key, ordinal, split, label)) = read_record(&mut r, &mut buf, path)? {
                let text =
                    std::str::from_utf8(&buf).map_err(|_| corrupt(path, "holds invalid UTF-8"))?;
                let b = ((key << used) >> (64 - take)) as usize;
                let rec = Spooled {
                    key,
                    ordinal,
                    split,
                    label,
                    text,
                };
                write_record(&mut writers[b], &rec).map_err(|e| Error::io(&paths[b], e))?;
            }
        }
        close(&paths, writers)?;
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        for p in &paths {
            drain_bucket(p, used + take, budget, f)?;
        }
        return std::fs::remove_dir(&dir).map_err(|e| Error::io(&dir, e));
    }
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    // (key, ordinal, offset of the header)
    let mut index: Vec<(u64, u64, usize)> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let h = data
            .get(at..at + HEADER)
            .ok_or_else(|| corrupt(path, "ends inside a record"))?;
        let (key, ordinal, _, _, len) = parse_header(h);
        index.push((key, ordinal, at));
        at += HEADER + len;
    }
    if at != data.len() {
        return Err(corrupt(path, "ends inside a record"));
    }
    index.sort_unstable();
    for (_, _, at) in index {
        let (key, ordinal, split, label, len) = parse_header(&data[at..at + HEADER]);
        let text = std::str::from_utf8(&data[at + HEADER..at + HEADER + len])
            .map_err(|_| corrupt(path, "holds invalid UTF-8"))?;
        f(Spooled {
            key,
            ordinal,
            split,
            label,
            text,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::SplitMix64;

    fn drained(bits: u32, budget: u64, n: u64) -> Vec<(u64, u64, String)> {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::create(dir.path(), bits).expect("spool");
        let mut rng = SplitMix64::derive(1, &[]);
        for i in 0..n {
            // Some duplicate keys, so the ordinal tie-break is exercised too.
            let key = if i % 7 == 0 { 42 << 40 } else { rng.next_u64() };
            let text = format!("text {i} {}", "x".repeat((i % 13) as usize));
            spool
                .push(&Spooled {
                    key,
                    ordinal: i,
                    split: (i % 3) as u16,
                    label: i as u32,
                    text: &text,
                })
                .expect("push");
        }
        assert_eq!(spool.totals().0, n);
        let mut out = Vec::new();
        spool
            .finish()
            .expect("finish")
            .drain_sorted(budget, &mut |r| {
                assert_eq!(
                    (r.split, r.label),
                    ((r.ordinal % 3) as u16, r.ordinal as u32)
                );
                out.push((r.key, r.ordinal, r.text.to_string()));
                Ok(())
            })
            .expect("drain");
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
            "drained buckets are removed"
        );
        out
    }

    #[test]
    fn the_order_is_sort_by_key_and_ordinal_whatever_the_buckets_and_budget() {
        let reference = drained(0, u64::MAX, 3000);
        let mut sorted = reference.clone();
        sorted.sort();
        assert_eq!(reference, sorted);
        assert_eq!(reference.len(), 3000);
        // More buckets, and a budget so small that every bucket is re-scattered (recursively).
        assert_eq!(drained(4, u64::MAX, 3000), reference);
        assert_eq!(drained(2, 2_000, 3000), reference);
        // A budget below one record: buckets are split down to single records, then loaded.
        assert_eq!(drained(0, 1, 100), drained(0, u64::MAX, 100));
    }
}
