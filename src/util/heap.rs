//! Keep freed memory for reuse in the long-running processes (server, site, role nodes).
//!
//! Why: glibc serves every allocation above its mmap threshold (32 MiB at most on 64-bit, whatever it is tuned
//! to) with a fresh `mmap` and gives it back with `munmap` on free. A federation moves model-sized buffers — 40 MB
//! at 10M parameters — several times per round in every process (the download, the decoded weights, the update,
//! its encoding; on the server every upload and its decoding), so each round the kernel page-faulted and zeroed
//! every one of them afresh: about a fifth of all CPU time of a K = 8, P = 10M bench round (`perf`, BENCHMARKS.md
//! P2). With mmap off (`M_MMAP_MAX = 0`) and trimming off, a freed buffer stays in the heap and the next round's
//! buffer of the same size reuses it: 1.1 → 0.7 s per round in that bench.
//!
//! The cost: a process keeps its peak heap (RSS does not shrink after a large round), which is what a server or a
//! site that runs round after round reaches anyway. `HISTOFED_RETAIN_HEAP=0` keeps glibc's defaults. Other C
//! libraries (musl) and other systems are left alone.

/// The environment variable that turns this off (`0`).
pub const ENV: &str = "HISTOFED_RETAIN_HEAP";

/// Tells the allocator to keep freed memory for reuse. Returns whether it did.
pub fn retain_freed_memory() -> bool {
    if std::env::var(ENV).is_ok_and(|v| v.trim() == "0") {
        return false;
    }
    retain()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn retain() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time, from any thread.
    unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn retain() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes the struct we hand it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_minflt
    }

    fn touch(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        v.resize(n, 7u8);
        v
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_buffers_are_reused_without_page_faults() {
        const N: usize = 48 << 20; // above glibc's largest mmap threshold
        assert!(retain_freed_memory());
        drop(touch(N));
        let before = thread_faults();
        let again = touch(N);
        let faults = thread_faults() - before;
        assert_eq!(again[N - 1], 7);
        // A fresh mapping would fault every one of its 12,288 pages in; a reused heap buffer faults none of them.
        assert!(faults < 1_000, "{faults} page faults: the freed buffer was mapped afresh");
    }
}
