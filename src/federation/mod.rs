//! Federation logic without sockets or actors: named weight bundles and their byte form ([`weights`]), the
//! aggregation seam ([`strategy`]), update validation ([`validate`]), per-round quorum bookkeeping ([`round`]), who holds each site ([`fencing`]), secure
//! aggregation's protocol ([`secagg`]) and atomic checkpoints ([`checkpoint`]). Everything here is testable with plain unit tests.

pub mod checkpoint;
pub mod evaluation;
pub mod fencing;
pub mod privacy;
pub mod round;
pub mod secagg;
pub mod site_store;
pub mod strategy;
pub mod validate;
pub mod weights;
