//! The roles of histofed, each a thin ractor shell over pure library code:
//! - [`server`]: the global model and the round loop,
//! - [`site`]: one per hospital; owns its shard, supervises its trainer,
//! - [`trainer`]: local GAN epochs on a dedicated tch thread,
//! - [`evaluator`]: sample grids and quality numbers per round,
//! - [`checkpoint_writer`]: the server's child that makes each completed round durable,
//! - [`role`]: the extension seam — a user's [`role::Role`] hosted on its own node, fed every completed round,
//!
//! plus the pieces they share: the protocol ([`messages`]), the restart policy ([`restart_policy`]) and the
//! dedicated-thread [`worker`].

use std::sync::{Arc, Mutex};

pub mod checkpoint_writer;
pub mod evaluator;
pub mod messages;
pub mod restart_policy;
pub mod role;
pub mod server;
pub mod site;
pub mod trainer;
pub mod worker;

/// How a role's process should end: set once by the actor, read by the binary after the actor stops.
pub type Exit = Arc<Mutex<Option<Result<String, String>>>>;

/// Records how the process should end; the first outcome wins.
pub fn set_exit(exit: &Exit, outcome: Result<String, String>) {
    if let Ok(mut slot) = exit.lock() {
        slot.get_or_insert(outcome);
    }
}
