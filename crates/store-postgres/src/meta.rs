//! The `meta` key/value table.

use sqlx::PgExecutor;

use super::{Store, StoreResult};

/// The pairgate version that last applied migrations to this database.
pub const LAST_MIGRATED_BY: &str = "last_migrated_by";
/// PHC string of the argon2id hash of the gateway token pairgate generated on first start.
pub const GATEWAY_TOKEN_ARGON2: &str = "gateway_token_argon2";

pub(super) async fn get_on<'e>(executor: impl PgExecutor<'e>, key: &str) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar!("SELECT value FROM meta WHERE key = $1", key).fetch_optional(executor).await?)
}

pub(super) async fn set_on<'e>(executor: impl PgExecutor<'e>, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value
    )
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    pub async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        get_on(&self.pool, key).await
    }

    /// Stores the gateway token's hash unless one is already stored; returns whether it was stored,
    /// so two processes racing on first start cannot both write a token file.
    pub async fn init_gateway_token_hash(
        &self,
        phc: &str,
        actor: &super::Actor,
        now_ms: pairgate_domain::clock::Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let key = GATEWAY_TOKEN_ARGON2;
        let inserted =
            sqlx::query!("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, phc)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if inserted {
            super::audit::record(&mut tx, &super::AuditEvent::new(actor, "gateway_token.generate", now_ms)).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Replaces the gateway token's hash (an operator made or set a new token), with its audit row.
    pub async fn replace_gateway_token_hash(
        &self,
        phc: &str,
        actor: &super::Actor,
        now_ms: pairgate_domain::clock::Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        set_on(&mut *tx, GATEWAY_TOKEN_ARGON2, phc).await?;
        super::audit::record(&mut tx, &super::AuditEvent::new(actor, "gateway_token.replace", now_ms)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn gateway_token_hash(&self) -> StoreResult<Option<String>> {
        self.meta(GATEWAY_TOKEN_ARGON2).await
    }
}
