//! Fencing: a site's identity is active in at most one process at a time.
//!
//! Why: when a Kubernetes node dies (or is only cut off) the StatefulSet's replacement for site N can start while
//! the old process still lives, frozen or partitioned; when the node comes back both claim site N. Without fencing
//! the old process's heartbeats would keep the site "alive", and an update it had in flight would be folded as site
//! N's — twice, or in place of the replacement's.
//!
//! The rule, as a pure registry the server consults (no actors, no sockets, no clocks):
//! - Every admission gets a **generation**, larger than every generation handed out before, also across server
//!   restarts ([`Fencing::new`] starts from the server's start time). The site echoes it in every frame and upload.
//! - A **fresh process** (its hello holds no earlier admission) takes the identity over: the newest process wins,
//!   and the admission it replaces is fenced (its token withdrawn, its process told to stop).
//! - A process that **held an admission before** (it reconnects) gets the identity back only if no other process
//!   holds it more recently; otherwise it is refused as a zombie.
//! - A frame or upload under a generation that is not the site's current one is fenced when it comes from another
//!   process, and merely stale when it comes from the current process's own earlier admission.
//!
//! An update that the server received in full before the take-over was the site's then and counts; anything that
//! arrives after it does not, even an upload that was already on the wire.

use std::collections::{HashMap, VecDeque};

/// Bits of a generation below the server's epoch.
const COUNTER_BITS: u32 = 24;
/// Earlier admissions remembered per site (older ones are refused as stale, never told to stop by name).
const HISTORY: usize = 16;

/// One admission of a site: which process holds it and under which generation and transfer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub generation: u64,
    /// The process (random per process, named in its hello and its actor's name).
    pub instance: u64,
    /// The bulk-plane token of this admission.
    pub token: u64,
    /// The generation this process held before this admission (`None`: a fresh process).
    pub held: Option<u64>,
}

impl Admission {
    /// How recently this process is known to have held the site: its generation before this server's admission
    /// when it had one (an earlier server's), else this admission's own.
    fn claim(&self) -> u64 {
        self.held.unwrap_or(self.generation)
    }
}

/// What to do with a site's hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloDecision {
    /// Admit it under `admission`; `supersedes` is the admission of another process it takes over (fence it).
    Admit { admission: Admission, supersedes: Option<Admission> },
    /// Refuse it: another process holds the site more recently.
    Fenced { current: Admission },
}

/// What a frame or upload under some generation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// The site's current admission.
    Current(Admission),
    /// An earlier admission of the process that holds the site now (a frame left before it re-joined): drop it.
    Stale,
    /// An admission of a process the site was taken from: refuse it and tell that process (`instance`) to stop.
    Fenced { instance: u64, current: Admission },
    /// Nothing known of this site or generation (e.g. from before a server restart): drop it.
    Unknown,
}

#[derive(Debug, Default)]
struct SiteRecord {
    current: Option<Admission>,
    /// Earlier admissions, newest last.
    history: VecDeque<Admission>,
}

impl SiteRecord {
    fn fenced_instance(&self, instance: u64) -> bool {
        let current = self.current.map(|c| c.instance);
        self.history.iter().any(|a| a.instance == instance && Some(instance) != current)
    }

    fn retire(&mut self, a: Admission) {
        self.history.push_back(a);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

/// The server's record of who holds each site.
#[derive(Debug)]
pub struct Fencing {
    next: u64,
    sites: HashMap<u32, SiteRecord>,
}

impl Fencing {
    /// A registry whose generations start above every generation an earlier server (started at an earlier
    /// `epoch_secs`, Unix seconds) could have handed out.
    pub fn new(epoch_secs: u64) -> Self {
        Fencing { next: (epoch_secs << COUNTER_BITS) + 1, sites: HashMap::new() }
    }

    fn issue(&mut self, held: Option<u64>) -> u64 {
        // A clock that went back, or a restart within the same second, must not reissue a generation seen.
        self.next = self.next.max(held.map_or(0, |h| h + 1));
        let g = self.next;
        self.next += 1;
        g
    }

    /// The current admission of `site`, if any.
    pub fn current(&self, site: u32) -> Option<Admission> {
        self.sites.get(&site).and_then(|r| r.current)
    }

    /// A hello of process `instance` for `site`, which held generation `held` before (`None`: a fresh process);
    /// `token` is the transfer token the admission would get.
    pub fn hello(&mut self, site: u32, instance: u64, held: Option<u64>, token: u64) -> HelloDecision {
        let rec = self.sites.entry(site).or_default();
        let previous = rec.current;
        if let Some(cur) = previous.filter(|c| c.instance != instance) {
            let older = match held {
                None => false,
                Some(h) => rec.fenced_instance(instance) || h < cur.claim(),
            };
            if older || (held.is_none() && rec.fenced_instance(instance)) {
                return HelloDecision::Fenced { current: cur };
            }
        }
        let generation = self.issue(held);
        let admission = Admission { generation, instance, token, held };
        let rec = self.sites.entry(site).or_default();
        if let Some(prev) = rec.current.replace(admission) {
            rec.retire(prev);
        }
        HelloDecision::Admit { admission, supersedes: previous.filter(|p| p.instance != instance) }
    }

    /// The current process of `site` answers again after it was declared lost: a new admission for it (same
    /// process, so nothing is fenced). `None` when `site` has no current admission.
    pub fn readmit(&mut self, site: u32, token: u64) -> Option<Admission> {
        let cur = self.current(site)?;
        let generation = self.issue(Some(cur.generation));
        let admission = Admission { generation, instance: cur.instance, token, held: cur.held };
        let rec = self.sites.entry(site).or_default();
        rec.current = Some(admission);
        rec.retire(cur);
        Some(admission)
    }

    /// What a frame or upload of `site` under `generation` is.
    pub fn check(&self, site: u32, generation: u64) -> FrameCheck {
        let Some(rec) = self.sites.get(&site) else { return FrameCheck::Unknown };
        let Some(cur) = rec.current else { return FrameCheck::Unknown };
        if cur.generation == generation {
            return FrameCheck::Current(cur);
        }
        match rec.history.iter().find(|a| a.generation == generation) {
            Some(a) if a.instance == cur.instance => FrameCheck::Stale,
            Some(a) => FrameCheck::Fenced { instance: a.instance, current: cur },
            None => FrameCheck::Unknown,
        }
    }

    /// Which process held `site` under the transfer token `token` (a fenced bulk transfer names only the token).
    pub fn instance_of_token(&self, site: u32, token: u64) -> Option<u64> {
        let rec = self.sites.get(&site)?;
        rec.current.iter().chain(rec.history.iter()).find(|a| a.token == token).map(|a| a.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(d: HelloDecision) -> (Admission, Option<Admission>) {
        match d {
            HelloDecision::Admit { admission, supersedes } => (admission, supersedes),
            other => panic!("expected an admission, got {other:?}"),
        }
    }

    #[test]
    fn a_fresh_process_takes_the_site_over_and_the_old_one_is_fenced_for_good() {
        let mut f = Fencing::new(1000);
        let (old, none) = admit(f.hello(3, 0xa, None, 11));
        assert_eq!(none, None);
        // The replacement (a fresh process) wins at once, even while the old one still counts as a member.
        let (new, superseded) = admit(f.hello(3, 0xb, None, 12));
        assert_eq!(superseded, Some(old));
        assert!(new.generation > old.generation);
        // The old process's frames and uploads are fenced, by name.
        assert_eq!(f.check(3, old.generation), FrameCheck::Fenced { instance: 0xa, current: new });
        assert_eq!(f.check(3, new.generation), FrameCheck::Current(new));
        assert_eq!(f.instance_of_token(3, 11), Some(0xa));
        // It reconnects claiming what it held: refused, and it stays refused.
        assert_eq!(f.hello(3, 0xa, Some(old.generation), 13), HelloDecision::Fenced { current: new });
        assert_eq!(f.hello(3, 0xa, None, 14), HelloDecision::Fenced { current: new });
        assert_eq!(f.current(3), Some(new));
        // Other sites are not affected.
        assert_eq!(f.check(4, old.generation), FrameCheck::Unknown);
    }

    #[test]
    fn the_same_process_rejoining_is_no_zombie_and_its_old_frames_are_only_stale() {
        let mut f = Fencing::new(1000);
        let (first, _) = admit(f.hello(0, 7, None, 1));
        let (second, superseded) = admit(f.hello(0, 7, Some(first.generation), 2));
        assert_eq!(superseded, None);
        assert_eq!(f.check(0, first.generation), FrameCheck::Stale);
        let third = f.readmit(0, 3).unwrap();
        assert_eq!((third.instance, third.generation > second.generation), (7, true));
        assert_eq!(f.check(0, second.generation), FrameCheck::Stale);
        assert_eq!(f.readmit(9, 4), None);
    }

    #[test]
    fn after_a_server_restart_the_more_recent_holder_wins_whichever_reconnects_first() {
        // The old server: process A held site 1, then B took it over.
        let mut old = Fencing::new(1000);
        let (a, _) = admit(old.hello(1, 0xa, None, 1));
        let (b, _) = admit(old.hello(1, 0xb, None, 2));
        // A new server (later epoch); the zombie A reconnects first and is admitted (nothing is known of B yet)...
        let mut f = Fencing::new(2000);
        let (a2, _) = admit(f.hello(1, 0xa, Some(a.generation), 3));
        assert!(a2.generation > b.generation, "generations grow across restarts");
        // ...but B held the site more recently: B takes it over, A is fenced.
        let (b2, superseded) = admit(f.hello(1, 0xb, Some(b.generation), 4));
        assert_eq!(superseded, Some(a2));
        assert_eq!(f.check(1, a2.generation), FrameCheck::Fenced { instance: 0xa, current: b2 });
        // In the other order A is refused outright.
        let mut g = Fencing::new(2000);
        let (b3, _) = admit(g.hello(1, 0xb, Some(b.generation), 5));
        assert_eq!(g.hello(1, 0xa, Some(a.generation), 6), HelloDecision::Fenced { current: b3 });
    }

    #[test]
    fn a_restart_within_the_same_second_never_reissues_a_generation() {
        let mut old = Fencing::new(1000);
        let (a, _) = admit(old.hello(0, 1, None, 1));
        let mut f = Fencing::new(1000);
        let (a2, _) = admit(f.hello(0, 1, Some(a.generation), 2));
        assert!(a2.generation > a.generation);
        let (other, _) = admit(f.hello(5, 2, None, 3));
        assert!(other.generation > a2.generation);
    }
}
