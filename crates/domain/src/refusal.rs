//! Why an operation was refused: the outcomes a caller branches on, as types. The store returns them, the
//! application layer adds its own, and each front end turns them into its wire format in one place
//! (`gateway::errors` for WebSocket errors, `admin::error` for HTTP ones). Nothing decides by an error's text.

use crate::{RequestStatus, Role, RunState, Scope, SetupFault, SetupState};

/// An operation refused for a reason the caller can act on; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("pairing request {request_id} not found")]
    UnknownRequest { request_id: String },
    #[error("pairing request {request_id} is already {}", status.as_str())]
    AlreadyDecided { request_id: String, status: RequestStatus },
    #[error("pairing request {request_id} expired; the device must connect again to ask anew")]
    Expired { request_id: String },
    /// An approval narrowed to a scope the request never asked for.
    #[error("cannot approve {scope}: pairing request {request_id} did not ask for it")]
    ScopeNotAsked { request_id: String, scope: Scope },
    /// A new pairing ask past the caps on pending requests (per client address, or in all).
    #[error("too many pending pairing requests {} (at most {max}); try again once an operator decides them or they expire", if *per_address { "from this address" } else { "in all" })]
    TooManyPendingRequests { per_address: bool, max: i64 },
    #[error("device {device_id} not found")]
    UnknownDevice { device_id: String },
    /// The device has no approved grant for the role.
    #[error("role {role} of device {device_id} not found")]
    NoGrant { device_id: String, role: Role },
    /// The role's token was already withdrawn (rotated or revoked); the device gets a new one on its next
    /// connect.
    #[error(
        "live {role} token of device {device_id} not found: it was already rotated or revoked (the device gets a new one on its next connect)"
    )]
    NoLiveToken { device_id: String, role: Role },
    /// A rotation narrowed to a scope the role was never approved for.
    #[error("cannot rotate to {scope}: the {role} role was not approved for it")]
    ScopeNotGranted { role: Role, scope: Scope },
    /// The caller does not hold a scope it would hand out, or that the device it manages holds. The words
    /// are OpenClaw's, which its clients parse.
    #[error("missing scope: {scope}")]
    MissingScope { scope: Scope },
    /// Handing out the node role takes `operator.admin`.
    #[error("{action} denied: role node requires operator.admin")]
    NodeNeedsAdmin { action: &'static str },
    #[error("session {key} not found")]
    UnknownSession { key: String },
    #[error("run {run_id} not found")]
    UnknownRun { run_id: String },
    #[error("spawn limit reached: {} (at most {max}, now {current})", limit.as_str())]
    SpawnLimit { limit: SpawnLimit, max: i64, current: i64 },
    #[error("run {run_id} is {} and cannot become {}", from.as_str(), to.as_str())]
    IllegalTransition { run_id: String, from: RunState, to: RunState },
    #[error("{field} is immutable once set (it is {current})")]
    ImmutableField { field: &'static str, current: String },
    #[error("session key {key} is not agent:<id>:…")]
    NotAnAgentKey { key: String },
    #[error("lineage fields are only for sub-agent sessions, not {key}")]
    LineageOnMainSession { key: String },
    #[error("a session cannot be its own parent")]
    OwnParent,
    #[error("{key} is a main session and cannot be deleted")]
    MainSessionUndeletable { key: String },
    #[error("session {key} has {count} active run(s); kill them first")]
    SessionHasActiveRuns { key: String, count: i64 },
    #[error("session {key} has {count} child session(s); delete them first")]
    SessionHasChildren { key: String, count: i64 },
    #[error("run {run_id} exists already")]
    DuplicateRun { run_id: String },
    /// A field of a session or run outside the values it may take.
    #[error("invalid {field}: {value} (expected {expected})")]
    InvalidField { field: &'static str, value: String, expected: String },
    #[error("{field} is too long: {length} bytes (at most {max})")]
    TooLong { field: &'static str, length: usize, max: usize },
    /// A connect with a setup code that cannot be redeemed. Every fault reads the same on the wire
    /// (OpenClaw's words); the audit trail says which it was.
    #[error("setup code {}", fault.as_str())]
    SetupCodeInvalid { fault: SetupFault },
    #[error("setup code {setup_id} not found")]
    UnknownSetupCode { setup_id: String },
    /// Minting past the cap on codes that could still be redeemed.
    #[error("too many unused setup codes (at most {max}); revoke some, or wait for them to expire")]
    TooManySetupCodes { max: i64 },
    /// Revoking a code that can no longer be redeemed.
    #[error("setup code {setup_id} is already {}", state.as_str())]
    SetupCodeSettled { setup_id: String, state: SetupState },
    /// Minting with no URL a device could reach: pairgate listens on loopback only (OpenClaw refuses
    /// then too), or on every address, of which it cannot pick the one devices reach.
    #[error(
        "no public URL for setup codes: pairgate {} Set --public-url (PAIRGATE_PUBLIC_URL) to the ws:// or wss:// address devices reach{}",
        if *loopback_only { "is only listening on loopback." } else { "listens on every address and cannot tell which one devices reach." },
        if *loopback_only { ", or listen on a LAN address" } else { "" }
    )]
    NoPublicUrl { loopback_only: bool },
    #[error("{reason}")]
    BadPublicUrl { reason: String },
    /// Join codes hand their token to whoever fetches them: TLS, or loopback.
    #[error(
        "join URLs require a TLS gateway URL (wss://), except for loopback; use the setup code directly for plaintext LAN pairing"
    )]
    JoinNeedsTls,
    #[error("join URLs pair the node role only (access node)")]
    JoinNeedsNodeAccess,
    /// A device without `operator.admin` renaming another device, or itself while it holds the node role
    /// (OpenClaw's words).
    #[error("device pairing rename denied")]
    RenameDenied,
    /// A device label outside 1..=64 characters, or with control characters.
    #[error("label must be 1 to 64 characters, without control characters")]
    BadLabel,
    /// A session or run the database's own constraints refuse, past every check above (the detail is
    /// logged, never sent: it is SQLite's text).
    #[error("invalid session or run")]
    InvalidSessionOrRun,
}

/// Which sub-agent spawn limit a registration would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnLimit {
    /// How deep sub-agents may nest.
    Depth,
    /// Active runs of one requester session.
    Children,
    /// Active runs in all.
    Concurrent,
}

impl SpawnLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnLimit::Depth => "depth",
            SpawnLimit::Children => "children",
            SpawnLimit::Concurrent => "concurrency",
        }
    }
}
