//! TensorBoard scalars: an `events.out.tfevents.*` file in the run folder, written by hand.
//!
//! The format is small and stable: a file of TFRecords (`u64` length, masked CRC-32C of the length,
//! payload, masked CRC-32C of the payload), each payload a `tensorflow.Event` protocol buffer. The
//! first event names the file version (`brain.Event:2`); every other carries a `Summary` of
//! `simple_value` scalars. Encoding the four message fields by hand keeps a protobuf stack out of
//! the build. `tensorboard --logdir runs/` then shows every run's curves.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// CRC-32C (Castagnoli), bitwise: the records are small and few.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC (so a CRC stored inside CRC'd data does not look like one).
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// An `Event` with `wall_time`, `step` and either a `file_version` or a summary of scalars.
fn event(
    wall_time: f64,
    step: u64,
    file_version: Option<&str>,
    scalars: &[(&str, f64)],
) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(1 << 3 | 1); // wall_time: double
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(2 << 3); // step: int64 varint
    varint(step, &mut e);
    if let Some(version) = file_version {
        length_delimited(3, version.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            length_delimited(1, tag.as_bytes(), &mut v);
            v.push(2 << 3 | 5); // simple_value: float
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            length_delimited(1, &v, &mut summary);
        }
        length_delimited(5, &summary, &mut e);
    }
    e
}

fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalar events to one events file (flushed per write, like the metrics file).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<seconds>.wave-dist` in `dir`.
    pub fn create(dir: &Path) -> Result<EventWriter, Error> {
        let wall = now();
        let path = dir.join(format!("events.out.tfevents.{}.wave-dist", wall as u64));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        w.put(&event(wall, 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    /// Writes `scalars` (tag, value) at `step`; non-finite values are left out.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<(), Error> {
        let finite: Vec<(&str, f64)> = scalars
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite())
            .collect();
        if finite.is_empty() {
            return Ok(());
        }
        self.put(&event(now(), step, None, &finite))
    }

    fn put(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(&record(payload))
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_record_frames_its_payload_with_length_and_checksums() {
        let payload = event(1.5, 7, None, &[("train/loss", 0.25)]);
        let r = record(&payload);
        assert_eq!(r.len(), payload.len() + 16);
        assert_eq!(
            u64::from_le_bytes(r[..8].try_into().expect("8 bytes")),
            payload.len() as u64
        );
        assert_eq!(&r[12..12 + payload.len()], payload.as_slice());
        let tail: [u8; 4] = r[r.len() - 4..].try_into().expect("4 bytes");
        assert_eq!(u32::from_le_bytes(tail), masked_crc(&payload));
    }
}
