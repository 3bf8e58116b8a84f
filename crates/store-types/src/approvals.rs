//! Group commit for approvals.
//!
//! An approval is acknowledged only after its transaction committed with `synchronous=FULL`. Committed
//! one at a time, approvals queue behind each other's commit and fsync, and behind a dozen round trips to
//! the database each. So approvals go to one committer task: it takes every approval queued
//! while the previous group committed (up to `MAX_GROUP`), decides them in one transaction, commits once,
//! then answers each. A lone approval is committed at once, with no wait for company.
//!
//! Each approval stays all-or-nothing: a refusal (unknown, already decided, expired, a scope not asked
//! for) writes nothing of that approval. Should anything fail mid-approval, or the commit itself, the
//! group is rolled back and each approval is retried in a transaction of its own, so one failure is
//! reported to its own caller only and nothing is half-written.
//!
//! The committer is a task of its own rather than whichever caller came first, so a caller that goes
//! away (an HTTP client that disconnects) cannot cancel the commit of the others' approvals. It is
//! tracked: `Store::close` stops it after it has decided every approval already queued, and only then
//! closes the database.

use std::future::Future;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Actor, PairingRequest, StoreError, StoreResult};
use pairgate_domain::ScopeSet;
use pairgate_domain::clock::Millis;

/// The most approvals one transaction decides.
const MAX_GROUP: usize = 64;

/// One approval to decide.
#[derive(Debug)]
pub struct Approval {
    pub request_id: String,
    pub narrower: Option<ScopeSet>,
    pub actor: Actor,
    /// Where the decision came from, for the audit row.
    pub remote_addr: Option<String>,
    pub now_ms: Millis,
}

type Reply = oneshot::Sender<StoreResult<PairingRequest>>;

/// The committer's queue; cloned with the store.
#[derive(Clone, Debug)]
pub struct Approvals {
    queue: mpsc::UnboundedSender<(Approval, Reply)>,
    /// Transactions committed by the committer (approvals per commit = decisions / this).
    pub commits: Counter,
    stop: CancellationToken,
    committer: TaskTracker,
}

impl Approvals {
    /// Starts the committer on the current runtime. It ends at `stop`, or when the last store handle is
    /// dropped.
    pub fn start(engine: impl DecideTogether) -> Self {
        let (queue, incoming) = mpsc::unbounded_channel();
        let commits = Counter::default();
        let stop = CancellationToken::new();
        let committer = Committer { engine, commits: commits.clone() };
        let tracker = TaskTracker::new();
        tracker.spawn(committer.run(incoming, stop.clone()));
        tracker.close();
        Approvals { queue, commits, stop, committer: tracker }
    }

    /// Decides what is queued, refuses what comes later (`ShuttingDown`), and waits for the committer to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.committer.wait().await;
    }

    /// Decides `approval`; answers after the commit that made it durable (or with why it was refused).
    pub async fn decide(&self, approval: Approval) -> StoreResult<PairingRequest> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::ShuttingDown;
        self.queue.send((approval, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// What an engine does for the committer: decide approvals in one of its write transactions.
pub trait DecideTogether: Send + Sync + 'static {
    /// Decides `approvals` in one transaction, committed before this returns: each one's outcome (a
    /// refusal writes nothing of its approval), or the failure that rolled all of them back.
    fn decide_together(
        &self,
        approvals: &[Approval],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<PairingRequest>>>> + Send;
}

struct Committer<E> {
    engine: E,
    commits: Counter,
}

impl<E: DecideTogether> Committer<E> {
    async fn run(self, mut incoming: mpsc::UnboundedReceiver<(Approval, Reply)>, stop: CancellationToken) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            let received = tokio::select! {
                biased;
                received = incoming.recv_many(&mut group, MAX_GROUP) => received,
                _ = stop.cancelled() => {
                    // No new approvals; those already queued are still decided (0 once none are left).
                    incoming.close();
                    incoming.recv_many(&mut group, MAX_GROUP).await
                }
            };
            if received == 0 {
                return;
            }
            let (approvals, replies): (Vec<Approval>, Vec<Reply>) = group.drain(..).unzip();
            let outcomes = match self.decide_together(&approvals).await {
                Ok(outcomes) => outcomes,
                Err(error) if approvals.len() == 1 => vec![Err(error)],
                Err(error) => {
                    tracing::warn!(%error, approvals = approvals.len(), "a group of approvals rolled back; deciding each alone");
                    let mut outcomes = Vec::with_capacity(approvals.len());
                    for approval in &approvals {
                        let outcome = self.decide_together(std::slice::from_ref(approval)).await;
                        outcomes.push(outcome.and_then(|mut one| one.pop().expect("one outcome per approval")));
                    }
                    outcomes
                }
            };
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away does not undo its approval: it was committed.
                let _ = reply.send(outcome);
            }
        }
    }

    /// Decides `approvals` in one of the engine's transactions, counting the commit.
    async fn decide_together(&self, approvals: &[Approval]) -> StoreResult<Vec<StoreResult<PairingRequest>>> {
        let outcomes = self.engine.decide_together(approvals).await?;
        self.commits.inc();
        Ok(outcomes)
    }
}
