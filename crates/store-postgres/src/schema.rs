//! The schema's version, the `meta` table, and schema drift: what `migrate verify` compares.

use std::collections::BTreeMap;

use pairgate_store_types::StoreResult;
use sqlx::{PgConnection, PgPool};

/// The newest successfully applied migration; 0 on a database with none.
pub(crate) async fn current_version(conn: &mut PgConnection) -> StoreResult<i64> {
    let exists = sqlx::query_scalar!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "exists!""#)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let version =
        sqlx::query_scalar!(r#"SELECT COALESCE(MAX(version), 0) AS "v!" FROM _sqlx_migrations WHERE success"#)
            .fetch_one(&mut *conn)
            .await?;
    Ok(version)
}

type Objects = BTreeMap<(String, String), String>;

/// The schema objects in `schema` (the migrator's own table aside), with the schema's name taken out of
/// their definitions so that two schemas compare.
async fn objects(conn: &mut PgConnection, schema: &str) -> StoreResult<Objects> {
    let rows = sqlx::query!(
        r#"
        SELECT 'column' AS "kind!", c.table_name::text || '.' || c.column_name::text AS "name!",
               c.data_type::text || ' nullable=' || c.is_nullable::text || ' identity=' || c.is_identity::text
                 || ' default=' || COALESCE(c.column_default::text, '') AS "definition!"
          FROM information_schema.columns c
         WHERE c.table_schema = $1 AND c.table_name <> '_sqlx_migrations'
        UNION ALL
        SELECT 'constraint', cl.relname::text || '.' || con.conname::text, pg_get_constraintdef(con.oid)
          FROM pg_constraint con
          JOIN pg_class cl ON cl.oid = con.conrelid
          JOIN pg_namespace n ON n.oid = cl.relnamespace
         WHERE n.nspname = $1 AND cl.relname <> '_sqlx_migrations'
        UNION ALL
        SELECT 'index', indexname::text, indexdef
          FROM pg_indexes WHERE schemaname = $1 AND tablename <> '_sqlx_migrations'
        UNION ALL
        SELECT 'view', viewname::text, definition FROM pg_views WHERE schemaname = $1
        UNION ALL
        SELECT 'trigger', cl.relname::text || '.' || t.tgname::text, pg_get_triggerdef(t.oid)
          FROM pg_trigger t
          JOIN pg_class cl ON cl.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = cl.relnamespace
         WHERE n.nspname = $1 AND NOT t.tgisinternal
        UNION ALL
        SELECT 'function', p.proname::text || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = $1
        UNION ALL
        SELECT 'rule', r.tablename::text || '.' || r.rulename::text, r.definition
          FROM pg_rules r WHERE r.schemaname = $1
        UNION ALL
        SELECT 'policy', p.tablename::text || '.' || p.policyname::text,
               p.cmd || ' ' || COALESCE(p.qual, '') || ' ' || COALESCE(p.with_check, '')
          FROM pg_policies p WHERE p.schemaname = $1
        "#,
        schema
    )
    .fetch_all(&mut *conn)
    .await?;
    let qualified = [format!("\"{schema}\"."), format!("{schema}.")];
    Ok(rows
        .into_iter()
        .map(|row| {
            let definition = qualified.iter().fold(row.definition, |text, prefix| text.replace(prefix.as_str(), ""));
            ((row.kind, row.name), definition)
        })
        .collect())
}

/// Every schema object of the live schema that differs from what the applied migrations make: one added
/// (a trigger that grants admin, say), one missing, or one changed. The reference is made by running the
/// applied migrations in a scratch schema inside a transaction that is rolled back: nothing is left.
pub(crate) async fn drift(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> StoreResult<Vec<String>> {
    let mut tx = pool.begin().await?;
    // A store opened read-only (`migrate verify`) makes its scratch schema all the same: in this one
    // transaction, which is rolled back, so nothing it does is ever committed.
    sqlx::query!("SET TRANSACTION READ WRITE").execute(&mut *tx).await?;
    let live: String = sqlx::query_scalar!(r#"SELECT current_schema() AS "s!""#).fetch_one(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut *tx)
        .await?;
    let actual = objects(&mut tx, &live).await?;
    let scratch = format!("pairgate_reference_{}", std::process::id());
    // Identifiers cannot be bound; this one is made here, of letters, digits and underscores only.
    sqlx::raw_sql(&format!("CREATE SCHEMA {scratch}; SET LOCAL search_path = {scratch}")).execute(&mut *tx).await?;
    for migration in migrator.iter().filter(|m| applied.contains(&m.version)) {
        sqlx::raw_sql(&migration.sql).execute(&mut *tx).await?;
    }
    let expected = objects(&mut tx, &scratch).await?;
    tx.rollback().await?;
    let mut drift = Vec::new();
    for (key, definition) in &actual {
        match expected.get(key) {
            None => drift.push(format!("schema: {} {} is not made by any migration", key.0, key.1)),
            Some(wanted) if wanted != definition => {
                drift.push(format!("schema: {} {} differs from what the migrations make", key.0, key.1))
            }
            Some(_) => {}
        }
    }
    for key in expected.keys().filter(|key| !actual.contains_key(*key)) {
        drift.push(format!("schema: {} {} is missing", key.0, key.1));
    }
    Ok(drift)
}
