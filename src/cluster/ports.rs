//! Free loopback ports for a federation started on one machine (`histofed demo`, the chaos runner, the benches and
//! the tests).
//!
//! Why not just bind port 0: a server needs *two* ports (the control port P and, by default, the bulk port P+1),
//! and it binds them a moment after we looked. Port 0 hands out ports from the kernel's ephemeral range, the same
//! range every outgoing connection on the machine draws from, so by the time the server binds, P+1 may be the
//! local end of somebody's client socket — CI saw exactly that ("Address already in use" on the bulk port). So we
//! pick from *below* the ephemeral range (no outgoing connection ever lands there), check that both P and P+1 bind,
//! and never hand the same port out twice in one process. Another process may still take the port between the
//! check and the bind; that window is now shared only with programs that choose fixed ports there.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Ports are drawn from here: above the well-known/registered ports most daemons use, below Linux's default
/// ephemeral range (32768–60999). Read from /proc when it says the ephemeral range starts lower.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;
const TRIES: usize = 500;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Why no port was found.
#[derive(Debug, thiserror::Error)]
#[error("no free pair of loopback ports in {low}..{high} after {tries} tries")]
pub struct NoFreePort {
    low: u16,
    high: u16,
    tries: usize,
}

/// A port P on 127.0.0.1 such that P and P+1 are both free now, outside the kernel's ephemeral range, and not
/// handed out before by this process.
pub fn free_port_pair() -> Result<u16, NoFreePort> {
    let (low, high) = range();
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..TRIES {
        let p = rng.random_range(low..high - 1);
        if handed.contains(&p) || handed.contains(&(p + 1)) {
            continue;
        }
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, p));
        let second = TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1));
        if first.is_ok() && second.is_ok() {
            handed.insert(p);
            handed.insert(p + 1);
            return Ok(p);
        }
    }
    Err(NoFreePort { low, high, tries: TRIES })
}

/// The range to draw from: [LOW, HIGH), shrunk to end below the ephemeral range when this machine's starts lower.
fn range() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u16>().ok()));
    match ephemeral_start {
        Some(start) if start < HIGH && start > 2_000 => (start / 2, start),
        _ => (LOW, HIGH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_free_distinct_and_below_the_ephemeral_range() {
        let (low, high) = range();
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            let p = free_port_pair().unwrap();
            assert!(p >= low && p + 1 < high, "{p} outside {low}..{high}");
            assert!(seen.insert(p) && seen.insert(p + 1), "{p} handed out twice");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
            TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).unwrap();
        }
    }

    #[test]
    fn a_taken_port_is_never_returned() {
        // Hold every other port of a small window; whatever comes back must bind.
        let p = free_port_pair().unwrap();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        for _ in 0..20 {
            let q = free_port_pair().unwrap();
            assert_ne!(q, p);
            assert_ne!(q + 1, p);
        }
    }
}
