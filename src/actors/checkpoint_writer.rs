//! The checkpoint-writer role: a child of the server that writes each completed round to disk on its own thread.
//!
//! Why an actor of its own: writing a real model (tens to hundreds of MB, fsync'd twice) takes long enough that the
//! server's mailbox would stall on it, and a stalled mailbox misses heartbeats and uploads. The server hands the round
//! over and goes on answering; the round counts as completed only when `ServerMsg::Saved` comes back, so a crash in
//! between loses nothing that was reported as done. A failed write (disk full) comes back as an `Err` and the server
//! retries it under its restart policy; a dead writer thread fails this actor and the server restarts it.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::messages::{ServerMsg, WriterMsg};
use crate::actors::worker::Worker;
use std::sync::Arc;

use crate::federation::checkpoint::{CheckpointMeta, CheckpointStore, PartData};
use crate::federation::weights::Weights;

pub struct CheckpointWriter;

type Job = (CheckpointMeta, Arc<Weights>, Vec<(String, String)>);

pub struct WriterState {
    worker: Worker<Job, Result<String, String>>,
}

impl Actor for CheckpointWriter {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = CheckpointStore;

    async fn pre_start(
        &self,
        _me: ActorRef<WriterMsg>,
        store: CheckpointStore,
    ) -> Result<WriterState, ActorProcessingErr> {
        let worker = Worker::spawn(
            "checkpoint-writer",
            1,
            move || store,
            |store: &mut CheckpointStore, (meta, weights, parts): Job| {
                let refs: Vec<(&str, PartData)> =
                    parts.iter().map(|(n, prefix)| (n.as_str(), PartData::Weights(&weights, prefix))).collect();
                store
                    .save_parts(&meta, &refs)
                    .map(|path| path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default())
                    .map_err(|e| e.to_string())
            },
        )?;
        Ok(WriterState { worker })
    }

    async fn handle(
        &self,
        _me: ActorRef<WriterMsg>,
        msg: WriterMsg,
        st: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WriterMsg::Save { meta, weights, parts, reply_to } => {
                let round = meta.round;
                match st.worker.run((meta, weights, parts)).await {
                    Ok(result) => reply_to.cast(ServerMsg::Saved { round, result })?,
                    // The thread died: fail, so the server's supervision restarts this writer and retries.
                    Err(reason) => return Err(reason.into()),
                }
            }
        }
        Ok(())
    }
}
