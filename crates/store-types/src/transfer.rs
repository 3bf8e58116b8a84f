//! The export format both engines write and read (`pairgate export` / `import --format json`): every row of
//! every table as JSON, in SQLite's representation (integers, text, JSON lists as their text, booleans as
//! 0 or 1, blobs as hex), so that an export moves between engines. A token value is never stored, so
//! never exported.

use serde_json::Value;

/// In foreign-key order (parents first).
/// Setup codes are not here: a code is a short-lived credential of the database that minted it, not state
/// to move (and only digests of it are stored anyway).
pub const TABLES: [(&str, &str); 9] = [
    ("meta", "key"),
    ("devices", "device_id"),
    ("device_labels", "device_id"),
    ("grants", "device_id, role"),
    ("device_tokens", "token_id"),
    ("pairing_requests", "created_at_ms, request_id"),
    ("sessions", "spawn_depth, session_key"),
    ("runs", "created_at_ms, run_id"),
    ("audit_events", "event_id"),
];

pub const EXPORT_FORMAT: &str = "pairgate-export";

/// The rules live writes keep, for one imported row: what the domain types would refuse is refused here,
/// so nothing is stored that a listing could not read back.
pub fn check_row(table: &str, row: &serde_json::Map<String, Value>) -> Result<(), String> {
    use pairgate_domain::{DeviceId, PairingReason, PublicKey, RequestStatus, Role, RunState, ScopeSet};
    // The columns checked below hold text: any other JSON value there (an array bound as its text, say)
    // would pass the checks unseen, so it is refused.
    let checked: &[&str] = match table {
        "devices" => &["device_id", "public_key"],
        "device_labels" => &["device_id", "label"],
        "grants" | "device_tokens" => &["role", "scopes"],
        "pairing_requests" => &["device_id", "public_key", "role", "roles", "scopes", "reason", "status"],
        "runs" => &["state"],
        _ => &[],
    };
    for column in checked {
        if !matches!(row.get(*column), None | Some(Value::Null) | Some(Value::String(_))) {
            return Err(format!("{column} must be text"));
        }
    }
    let text = |column: &str| row.get(column).and_then(Value::as_str);
    let role = |column: &str| match text(column) {
        Some(name) if Role::parse(name).is_none() => Err(format!("unknown role {name}")),
        _ => Ok(()),
    };
    let scopes = |column: &str| match text(column) {
        Some(json) => {
            let names: Vec<String> =
                serde_json::from_str(json).map_err(|_| format!("{column} is not a list of scopes"))?;
            ScopeSet::parse(&names).map(|_| ()).map_err(|e| e.to_string())
        }
        None => Ok(()),
    };
    let device = || match (text("device_id"), text("public_key")) {
        (Some(id), key) => {
            let id = DeviceId::try_from(id.to_owned()).map_err(|e| format!("device_id: {e}"))?;
            match key {
                Some(key) => {
                    let key = PublicKey::from_base64url(key).ok_or("public_key is not an Ed25519 key")?;
                    if DeviceId::from_public_key(&key) != id {
                        return Err("device_id is not derived from public_key".to_owned());
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        }
        (None, _) => Ok(()),
    };
    match table {
        "devices" => device(),
        "device_labels" => {
            device()?;
            match text("label") {
                Some(label) if crate::clean_label(label).as_deref() != Some(label) => {
                    Err("label must be 1 to 64 characters, trimmed, without control characters".to_owned())
                }
                _ => Ok(()),
            }
        }
        "grants" | "device_tokens" => {
            role("role")?;
            scopes("scopes")
        }
        "pairing_requests" => {
            device()?;
            role("role")?;
            scopes("scopes")?;
            let roles: Vec<String> =
                serde_json::from_str(text("roles").unwrap_or("[]")).map_err(|_| "roles is not a list")?;
            if let Some(unknown) = roles.iter().find(|name| Role::parse(name).is_none()) {
                return Err(format!("unknown role {unknown}"));
            }
            if let Some(reason) = text("reason").filter(|r| PairingReason::parse(r).is_none()) {
                return Err(format!("unknown reason {reason}"));
            }
            match text("status").filter(|s| RequestStatus::parse(s).is_none()) {
                Some(status) => Err(format!("unknown status {status}")),
                None => Ok(()),
            }
        }
        "runs" => match text("state").filter(|s| RunState::parse(s).is_none()) {
            Some(state) => Err(format!("unknown state {state}")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
