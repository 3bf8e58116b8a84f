//! Group commit for approvals (`pairgate_store_types::approvals`): this engine decides a group in one of its
//! write transactions.

use prometheus_client::metrics::histogram::Histogram;
use sqlx::SqlitePool;

use super::requests::approve_on;
use super::{StoreError, StoreResult, begin_write_on};
use crate::PairingRequest;
use pairgate_store_types::OwnEvents;
use pairgate_store_types::approvals::{Approval, Approvals, DecideTogether};

/// What the committer needs of the store: the writer, the latency metric, the ids it writes.
pub(super) struct Decider {
    pub writer: SqlitePool,
    pub latency: Histogram,
    pub own: OwnEvents,
}

impl DecideTogether for Decider {
    async fn decide_together(&self, approvals: &[Approval]) -> StoreResult<Vec<StoreResult<PairingRequest>>> {
        let mut tx = begin_write_on(&self.writer, &self.latency, &self.own).await?;
        let mut outcomes = Vec::with_capacity(approvals.len());
        for approval in approvals {
            outcomes.push(approve_on(&mut tx, approval).await?.map_err(StoreError::from));
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Starts the committer over this engine's writer.
pub(super) fn start(writer: SqlitePool, latency: Histogram, own: OwnEvents) -> Approvals {
    Approvals::start(Decider { writer, latency, own })
}
