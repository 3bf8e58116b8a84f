//! Sub-agent run control: register, start, end, kill, wait, and crash recovery. Every change wakes the
//! callers waiting on a run.

use std::time::Duration;

use super::App;
use super::error::AppResult;
use super::views::RunsKilled;
use crate::store::{Actor, NewRun, Run, RunEnd, StoreError};

/// How a wait for a run ended.
#[derive(Debug)]
pub enum WaitOutcome {
    Ended(Run),
    /// The run is still active; this is how it was when the wait gave up.
    TimedOut(Run),
}

impl App {
    /// Wakes every waiter so it re-reads its run.
    pub(super) fn runs_changed(&self) {
        self.runs_version.send_modify(|version| *version += 1);
    }

    /// Registers a run within the configured spawn limits (checked in the transaction that inserts it).
    pub async fn register_run(&self, actor: &Actor, new: &NewRun) -> AppResult<Run> {
        Ok(self.store.register_run(new, &self.config.spawn_limits, actor, self.clock.now_ms()).await?)
    }

    pub async fn start_run(&self, actor: &Actor, run_id: &str) -> AppResult<Run> {
        let run = self.store.start_run(run_id, actor, self.clock.now_ms()).await?;
        self.runs_changed();
        Ok(run)
    }

    pub async fn end_run(&self, actor: &Actor, run_id: &str, end: RunEnd, error: Option<&str>) -> AppResult<Run> {
        let run = self.store.end_run(run_id, end, error, actor, self.clock.now_ms()).await?;
        self.runs_changed();
        Ok(run)
    }

    /// Kills a run and its descendants' runs, and wakes whoever waits on them.
    pub async fn kill_run(&self, actor: &Actor, run_id: &str) -> AppResult<RunsKilled> {
        let killed = self.store.kill_run(run_id, actor, self.clock.now_ms()).await?;
        self.runs_changed();
        Ok(RunsKilled { run_id: run_id.to_owned(), killed: killed.into_iter().map(|run| run.run_id).collect() })
    }

    /// Fails the runs registered longer ago than the configured time that never started, and wakes whoever
    /// waits on them; runs periodically.
    pub async fn expire_unstarted_runs(&self) {
        let now = self.clock.now_ms();
        let cutoff = now - i64::try_from(self.config.unstarted_run_ttl.as_millis()).unwrap_or(i64::MAX);
        match self.store.expire_unstarted_runs(cutoff, now).await {
            Ok(failed) if !failed.is_empty() => {
                tracing::info!(runs = failed.len(), "runs registered but never started are failed");
                self.runs_changed();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not expire runs that never started"),
        }
    }

    /// Ends the runs whose server is gone (at start-up; on PostgreSQL also those of lost nodes, as the
    /// lease is held), and wakes whoever waits on them.
    pub async fn recover_runs(&self) -> Result<Vec<String>, StoreError> {
        let interrupted = self.store.recover_interrupted_runs(self.clock.now_ms()).await?;
        if !interrupted.is_empty() {
            tracing::warn!(
                runs = interrupted.len(),
                "runs whose server is gone (a crash, a lost node) are now interrupted"
            );
            self.runs_changed();
        }
        Ok(interrupted)
    }

    /// On PostgreSQL, joins the fleet as a new node (its id, logged); nothing on SQLite.
    pub async fn join_fleet(&self) -> Result<Option<String>, StoreError> {
        let node = self.store.join_fleet(self.lease_ms(), self.clock.now_ms()).await?;
        if let Some(node) = &node {
            tracing::info!(node = %node, lease_ms = self.lease_ms(), "joined the fleet");
        }
        Ok(node)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.node_lease.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    /// On PostgreSQL, for the node's life: renews its lease three times per lease, and ends the runs of
    /// nodes whose lease expired (another node's crash, `kill -9` or lost network). It ends them only once
    /// its own renewals have gone through for a whole lease: after it started, or after the database was
    /// out of reach for everyone, the other nodes get the same time to renew theirs, so that a live node
    /// is never taken for dead.
    pub async fn hold_lease(self: std::sync::Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.node_lease / 3);
        let mut renewing_since: Option<i64> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let now = self.clock.now_ms();
            match self.store.renew_lease(self.lease_ms(), now).await {
                Ok(()) => {
                    let since = *renewing_since.get_or_insert(now);
                    if now - since >= self.lease_ms()
                        && let Err(error) = self.recover_runs().await
                    {
                        tracing::warn!(%error, "could not end the runs of lost nodes");
                    }
                }
                Err(error) => {
                    renewing_since = None;
                    tracing::warn!(%error, "could not renew this node's lease");
                }
            }
        }
    }

    /// On PostgreSQL, for the node's life: about once a second, shares this node's counts of failed
    /// authentications and takes in the other nodes', so that the lockout counts the failures on all
    /// nodes together (no database write per failed guess).
    pub async fn share_auth_failures(self: std::sync::Arc<Self>) {
        use crate::auth::ratelimit::Elsewhere;
        const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
        let mut ticker = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let now = self.clock.now_ms();
            let counts: Vec<crate::store::AuthFailureCount> = self
                .limiter
                .local_counts(now)
                .into_iter()
                .map(|count| crate::store::AuthFailureCount {
                    network: count.network.to_string(),
                    window_start_ms: count.window_start_ms,
                    failures: i64::from(count.failures),
                    locked_until_ms: count.locked_until_ms,
                })
                .collect();
            let window_ms = self.config.rate_limit.window_ms;
            match self.store.share_auth_failures(&counts, window_ms, now).await {
                Ok(elsewhere) => self.limiter.set_elsewhere(
                    elsewhere
                        .into_iter()
                        .filter_map(|other| {
                            let failures = u32::try_from(other.failures).unwrap_or(u32::MAX);
                            Some((
                                other.network.parse().ok()?,
                                Elsewhere { failures, locked_until_ms: other.locked_until_ms },
                            ))
                        })
                        .collect(),
                ),
                Err(error) => tracing::warn!(%error, "could not share failed-auth counts with the fleet"),
            }
        }
    }

    /// On PostgreSQL, leaves the fleet at a clean stop, ending this node's active runs; nothing on SQLite
    /// (its next start ends them).
    pub async fn leave_fleet(&self) {
        match self.store.leave_fleet(self.clock.now_ms()).await {
            Ok(ended) if !ended.is_empty() => {
                tracing::info!(runs = ended.len(), "left the fleet; this node's runs are interrupted");
                self.runs_changed();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not leave the fleet; its lease will expire"),
        }
    }

    /// Callers waiting on a run right now (`agent.wait`).
    pub fn run_waiters(&self) -> usize {
        self.runs_version.receiver_count()
    }

    /// Resolves when the run has ended or `timeout` passed; `None` for a run nobody registered. Woken by
    /// run changes in this process; it subscribes before reading, so an end that happens in between still
    /// wakes it.
    pub async fn wait_for_run(&self, run_id: &str, timeout: Duration) -> AppResult<Option<WaitOutcome>> {
        let mut changes = self.runs_version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(run) = self.store.run(run_id).await? else { return Ok(None) };
            if run.state.is_terminal() {
                return Ok(Some(WaitOutcome::Ended(run)));
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Ok(Some(WaitOutcome::TimedOut(run))) },
                _ = tokio::time::sleep_until(deadline) => return Ok(Some(WaitOutcome::TimedOut(run))),
            }
        }
    }
}
