//! The method table (docs/protocol.md §5): every method pairgate serves, the scope it needs and its typed
//! params, parsed once. A new method is one variant here; the compiler then asks for its name, its scope,
//! its params and its arm in `dispatch`.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::frames::{ErrorShape, decode_params};
use crate::domain::Scope;
use crate::store::SessionPatch;

/// A method pairgate serves itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Health,
    Status,
    PairList,
    PairApprove,
    PairReject,
    PairRemove,
    PairRename,
    PairSetupCode,
    PairSetupStatus,
    TokenRotate,
    TokenRevoke,
    SessionsList,
    SessionsGet,
    SessionsPatch,
    SessionsDelete,
    AgentWait,
    SubagentsRegister,
    SubagentsStart,
    SubagentsEnd,
    SubagentsKill,
    SubagentsList,
}

impl Method {
    /// Every method, in the order hello-ok lists them.
    pub const ALL: [Method; 21] = [
        Method::Health,
        Method::Status,
        Method::PairList,
        Method::PairApprove,
        Method::PairReject,
        Method::PairRemove,
        Method::PairRename,
        Method::PairSetupCode,
        Method::PairSetupStatus,
        Method::TokenRotate,
        Method::TokenRevoke,
        Method::SessionsList,
        Method::SessionsGet,
        Method::SessionsPatch,
        Method::SessionsDelete,
        Method::AgentWait,
        Method::SubagentsRegister,
        Method::SubagentsStart,
        Method::SubagentsEnd,
        Method::SubagentsKill,
        Method::SubagentsList,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Method::Health => "health",
            Method::Status => "status",
            Method::PairList => "device.pair.list",
            Method::PairApprove => "device.pair.approve",
            Method::PairReject => "device.pair.reject",
            Method::PairRemove => "device.pair.remove",
            Method::PairRename => "device.pair.rename",
            Method::PairSetupCode => "device.pair.setupCode",
            Method::PairSetupStatus => "device.pair.setupStatus",
            Method::TokenRotate => "device.token.rotate",
            Method::TokenRevoke => "device.token.revoke",
            Method::SessionsList => "sessions.list",
            Method::SessionsGet => "sessions.get",
            Method::SessionsPatch => "sessions.patch",
            Method::SessionsDelete => "sessions.delete",
            Method::AgentWait => "agent.wait",
            Method::SubagentsRegister => "subagents.register",
            Method::SubagentsStart => "subagents.start",
            Method::SubagentsEnd => "subagents.end",
            Method::SubagentsKill => "subagents.kill",
            Method::SubagentsList => "subagents.list",
        }
    }

    /// The scope a socket must hold to call it (`operator.admin` implies every scope).
    pub fn required_scope(self) -> Scope {
        match self {
            Method::Health | Method::Status => Scope::Read,
            Method::PairList
            | Method::PairApprove
            | Method::PairReject
            | Method::PairRemove
            | Method::PairRename
            | Method::TokenRotate
            | Method::TokenRevoke => Scope::Pairing,
            Method::SessionsList | Method::SessionsGet | Method::SubagentsList => Scope::Read,
            // Minting hands out a pairing: OpenClaw asks operator.admin for it.
            Method::PairSetupCode | Method::PairSetupStatus => Scope::Admin,
            Method::SessionsPatch | Method::SessionsDelete | Method::SubagentsKill => Scope::Admin,
            Method::AgentWait | Method::SubagentsRegister | Method::SubagentsStart | Method::SubagentsEnd => {
                Scope::Write
            }
        }
    }

    /// A method pairgate serves, or `None` for any other name (which a front door forwards upstream).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.name() == name)
    }

    /// Every method name, for hello-ok's `features.methods`.
    pub fn names() -> Vec<&'static str> {
        Method::ALL.iter().map(|method| method.name()).collect()
    }
}

/// Events a client may receive.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "device.pair.requested",
    "device.pair.resolved",
    "device.pair.changed",
    "device.pair.setup.completed",
];

/// One call with its params decoded.
#[derive(Debug)]
pub enum Call {
    Health,
    Status,
    PairList,
    PairApprove(RequestIdParams),
    PairReject(RequestIdParams),
    PairRemove(DeviceParams),
    PairRename(RenameParams),
    PairSetupCode(SetupCodeParams),
    PairSetupStatus(SetupStatusParams),
    TokenRotate(TokenParams),
    TokenRevoke(TokenParams),
    SessionsList(ListSessionsParams),
    SessionsGet(KeyParams),
    SessionsPatch(SessionPatch),
    SessionsDelete(KeyParams),
    AgentWait(WaitParams),
    SubagentsRegister(RegisterParams),
    SubagentsStart(RunIdParams),
    SubagentsEnd(EndParams),
    SubagentsKill(RunIdParams),
    SubagentsList(ListRunsParams),
}

impl Call {
    /// Decodes `params` (raw JSON, absent: `null`) as `method` takes them, straight into its type;
    /// methods without params never read them.
    pub fn parse(method: Method, params: Option<&RawValue>) -> Result<Call, ErrorShape> {
        Ok(match method {
            Method::Health => Call::Health,
            Method::Status => Call::Status,
            Method::PairList => Call::PairList,
            Method::PairApprove => Call::PairApprove(decode(params)?),
            Method::PairReject => Call::PairReject(decode(params)?),
            Method::PairRemove => Call::PairRemove(decode(params)?),
            Method::PairRename => Call::PairRename(decode(params)?),
            // Absent params are an empty object: every field is optional.
            Method::PairSetupCode => Call::PairSetupCode(match params {
                Some(_) => decode(params)?,
                None => SetupCodeParams::default(),
            }),
            Method::PairSetupStatus => Call::PairSetupStatus(decode(params)?),
            Method::TokenRotate => Call::TokenRotate(decode(params)?),
            Method::TokenRevoke => Call::TokenRevoke(decode(params)?),
            Method::SessionsList => Call::SessionsList(decode(params)?),
            Method::SessionsGet => Call::SessionsGet(decode(params)?),
            Method::SessionsPatch => Call::SessionsPatch(decode(params)?),
            Method::SessionsDelete => Call::SessionsDelete(decode(params)?),
            Method::AgentWait => Call::AgentWait(decode(params)?),
            Method::SubagentsRegister => Call::SubagentsRegister(decode(params)?),
            Method::SubagentsStart => Call::SubagentsStart(decode(params)?),
            Method::SubagentsEnd => Call::SubagentsEnd(decode(params)?),
            Method::SubagentsKill => Call::SubagentsKill(decode(params)?),
            Method::SubagentsList => Call::SubagentsList(decode(params)?),
        })
    }
}

fn decode<T: DeserializeOwned>(params: Option<&RawValue>) -> Result<T, ErrorShape> {
    decode_params(params).map_err(|e| ErrorShape::invalid(format!("invalid params: {e}")))
}

/// More names than there are scopes, with room for duplicates (the handshake's limit too).
pub const MAX_SCOPE_NAMES: usize = 64;

/// A list of scope names, refused past `MAX_SCOPE_NAMES` while it is read: a frame of 25 MiB of `""`
/// never becomes millions of strings.
#[derive(Debug, Default)]
pub struct ScopeNames(pub Vec<String>);

impl<'de> Deserialize<'de> for ScopeNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = ScopeNames;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ScopeNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    if names.len() == MAX_SCOPE_NAMES {
                        return Err(serde::de::Error::custom(format_args!("more than {MAX_SCOPE_NAMES} scopes")));
                    }
                    names.push(name);
                }
                Ok(ScopeNames(names))
            }
        }
        deserializer.deserialize_seq(Names)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIdParams {
    pub request_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceParams {
    pub device_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameParams {
    pub device_id: String,
    pub label: String,
}

/// `device.pair.setupCode`: OpenClaw's closed object (an unknown key is refused).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetupCodeParams {
    pub public_url: Option<String>,
    /// OpenClaw's choice of `gateway.remote.url` over the plugin's URL; pairgate has one public URL.
    pub prefer_remote_url: Option<bool>,
    /// Default true.
    pub include_qr: Option<bool>,
    /// `limited`, `node` or `voice-node`; absent is full (node with `joinUrl`).
    pub bootstrap_profile: Option<String>,
    pub join_url: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetupStatusParams {
    pub setup_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenParams {
    pub device_id: String,
    pub role: String,
    #[serde(default)]
    pub scopes: Option<ScopeNames>,
}

#[derive(Debug, Deserialize)]
pub struct KeyParams {
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSessionsParams {
    pub spawned_by: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitParams {
    pub run_id: String,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterParams {
    pub run_id: Option<String>,
    pub child_session_key: String,
    pub requester_session_key: String,
    pub controller_session_key: Option<String>,
    pub task: String,
    pub label: Option<String>,
    pub model: Option<String>,
    pub cleanup: Option<String>,
    pub spawn_mode: Option<String>,
    pub run_timeout_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunIdParams {
    pub run_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndParams {
    pub run_id: String,
    /// ok, error or timeout.
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRunsParams {
    pub requester_session_key: Option<String>,
    pub child_session_key: Option<String>,
    pub state: Option<String>,
    pub limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_in_params_are_refused_past_64_names_while_read() {
        let params = |names: usize| {
            let scopes = vec!["operator.read"; names];
            RawValue::from_string(
                serde_json::json!({"deviceId": "d", "role": "operator", "scopes": scopes}).to_string(),
            )
            .unwrap()
        };
        let Ok(Call::TokenRotate(rotate)) = Call::parse(Method::TokenRotate, Some(&params(64))) else { panic!() };
        assert_eq!(rotate.scopes.unwrap().0.len(), 64);
        let refused = Call::parse(Method::TokenRotate, Some(&params(65))).unwrap_err();
        assert_eq!(refused.message, "invalid params: more than 64 scopes");
        // Methods without params never read them, whatever they are.
        let junk = RawValue::from_string("[0,0,0]".into()).unwrap();
        assert!(matches!(Call::parse(Method::Health, Some(&junk)), Ok(Call::Health)));
    }

    #[test]
    fn every_method_parses_back_from_its_name() {
        for method in Method::ALL {
            assert_eq!(Method::parse(method.name()), Some(method));
        }
        assert_eq!(Method::parse("chat.send"), None);
        let mut names = Method::names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len(), "names are unique");
    }
}
