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
pub(crate) mod link;
pub mod messages;
pub mod restart_policy;
pub mod role;
pub mod server;
pub mod site;
pub mod trainer;
pub mod worker;

/// Whether `cell` is the child actor held in `child` (supervision events name the failed child by its cell).
pub(crate) fn is_child<T>(child: &Option<ractor::ActorRef<T>>, cell: &ractor::ActorCell) -> bool {
    child.as_ref().map(|c| c.get_id()) == Some(cell.get_id())
}

/// Spawns `actor` as a child of `supervisor` when it is configured (`args` is `Some`): the optional evaluators of
/// the server and of a site, at start and after a restart backoff.
pub(crate) async fn spawn_configured_child<A>(
    actor: A,
    args: &Option<A::Arguments>,
    supervisor: ractor::ActorCell,
) -> Result<Option<ractor::ActorRef<A::Msg>>, ractor::ActorProcessingErr>
where
    A: ractor::Actor,
    A::Arguments: Clone,
{
    let Some(args) = args else { return Ok(None) };
    let (child, _) = ractor::Actor::spawn_linked(None, actor, args.clone(), supervisor).await?;
    Ok(Some(child))
}

/// How a role's process should end: set once by the actor, read by the binary after the actor stops.
pub type Exit = Arc<Mutex<Option<Result<String, String>>>>;

/// Records how the process should end; the first outcome wins.
pub fn set_exit(exit: &Exit, outcome: Result<String, String>) {
    if let Ok(mut slot) = exit.lock() {
        slot.get_or_insert(outcome);
    }
}
