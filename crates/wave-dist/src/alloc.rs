//! The process's memory allocator: jemalloc, for every allocation, libtorch's tensors included
//! (its unprefixed `malloc` symbols replace glibc's for the shared libraries too).
//!
//! Why: a training step frees and re-allocates the same large buffers step after step
//! (activations of tens of MB, logits chunks, gradients). glibc hands every block above its mmap
//! threshold (32 MiB at most) back to the kernel on `free`, so the next step page-faults and
//! zero-fills it again: measured at a fifth of an IMDB step's time (d = 768, length 384), about
//! 0.7 M page faults per step. jemalloc can keep freed pages instead, which `train` asks for
//! ([`keep_freed_pages`]): the process then holds its peak working set, as PyTorch's CUDA caching
//! allocator does on a GPU. Other commands keep jemalloc's default, which returns idle pages
//! after about 10 s: `data prepare` grows and drops buffers of ever new sizes from several
//! threads, and keeping every freed page would triple its peak (measured: 0.65 GB with the
//! default decay, 2.0 GB without).
//!
//! `MALLOC_CONF` (jemalloc's syntax) sets the defaults for any command, e.g.
//! `MALLOC_CONF=narenas:2`.

#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::ptr;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Writes `value` to the jemalloc control `name`; false where jemalloc refuses it (an arena
/// index that was never initialised, for example).
fn write_control(name: &CStr, mut value: isize) -> bool {
    // SAFETY: the decay controls take one `ssize_t` as their new value, which `value` is, with its
    // size as the length; nothing is read back.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            (&mut value as *mut isize).cast::<c_void>(),
            std::mem::size_of::<isize>(),
        )
    };
    rc == 0
}

/// Arenas jemalloc may use (`arenas.narenas`).
fn arena_count() -> u32 {
    let mut count: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: `arenas.narenas` writes one `unsigned` into `count`, whose size `len` states.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arenas.narenas".as_ptr(),
            (&mut count as *mut u32).cast::<c_void>(),
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    if rc == 0 {
        count
    } else {
        0
    }
}

/// From now on freed pages stay with the process (dirty and muzzy decay off) in every arena,
/// existing and future, for the next step to reuse.
pub fn keep_freed_pages() {
    let mut refused = 0;
    for kind in ["dirty", "muzzy"] {
        let default = CString::new(format!("arenas.{kind}_decay_ms")).unwrap_or_default();
        refused += usize::from(!write_control(&default, -1));
        for arena in 0..arena_count() {
            let name = CString::new(format!("arena.{arena}.{kind}_decay_ms")).unwrap_or_default();
            // Arenas not in use yet are refused; they take the default set above.
            write_control(&name, -1);
        }
    }
    if refused > 0 {
        tracing::debug!("jemalloc refused to keep freed pages; they decay as by default");
    }
}

/// Hands the free pages jemalloc keeps back to the kernel: the trainer calls it once no training
/// step follows, before the final checkpoint copies the state out.
pub fn return_free_memory() {
    if !purge() {
        tracing::debug!("jemalloc did not purge its free pages");
    }
}

/// `arena.<all>.purge`; false where jemalloc refuses it.
fn purge() -> bool {
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL = 4096>.purge` reads and writes nothing: null pointers
    // and a zero length are its documented arguments.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_control(name: &CStr) -> isize {
        let mut value: isize = 0;
        let mut len = std::mem::size_of::<isize>();
        // SAFETY: the decay controls read back one `ssize_t` into `value`, whose size `len` states.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut isize).cast::<c_void>(),
                &mut len,
                ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "{name:?}");
        value
    }

    #[test]
    fn training_makes_every_arena_keep_its_freed_pages() {
        // jemalloc's default: dirty pages decay back to the kernel after about 10 s.
        assert!(read_control(c"arena.0.dirty_decay_ms") > 0);
        keep_freed_pages();
        for name in [
            c"arenas.dirty_decay_ms",
            c"arenas.muzzy_decay_ms",
            c"arena.0.dirty_decay_ms",
            c"arena.0.muzzy_decay_ms",
        ] {
            assert_eq!(read_control(name), -1, "{name:?}");
        }
        // Freed pages go back on request.
        drop(vec![1u8; 64 << 20]);
        assert!(purge(), "arena.4096.purge refused");
    }
}
