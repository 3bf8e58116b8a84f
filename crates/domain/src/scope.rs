//! Operator scopes and the implication rules between them (docs/protocol.md §5).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One operator scope. The set is closed: anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Scope {
    Admin,
    Approvals,
    Pairing,
    Questions,
    Read,
    Talk,
    TalkSecrets,
    Write,
}

/// A scope name that is not one of the operator scopes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope: {0}")]
pub struct UnknownScope(pub String);

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::Admin,
        Scope::Approvals,
        Scope::Pairing,
        Scope::Questions,
        Scope::Read,
        Scope::Talk,
        Scope::TalkSecrets,
        Scope::Write,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "operator.admin",
            Scope::Approvals => "operator.approvals",
            Scope::Pairing => "operator.pairing",
            Scope::Questions => "operator.questions",
            Scope::Read => "operator.read",
            Scope::Talk => "operator.talk",
            Scope::TalkSecrets => "operator.talk.secrets",
            Scope::Write => "operator.write",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope(truncate_for_message(text)))
    }

    /// Whether holding `self` is enough for something that needs `needed`:
    /// admin implies every scope, write implies read.
    pub fn implies(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin || (self == Scope::Write && needed == Scope::Read)
    }
}

impl TryFrom<String> for Scope {
    type Error = UnknownScope;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Scope::parse(&value)
    }
}

impl From<Scope> for &'static str {
    fn from(scope: Scope) -> &'static str {
        scope.as_str()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error messages echo a client's scope name; keep a hostile one short.
fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_owned();
    }
    format!("{}…", crate::prefix_within(text, MAX))
}

/// A set of scopes, kept sorted so its JSON form is canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn new() -> Self {
        ScopeSet::default()
    }

    /// Parses scope names, refusing the first unknown one. Duplicates collapse.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<ScopeSet, UnknownScope> {
        names.iter().map(|name| Scope::parse(name.as_ref())).collect::<Result<_, _>>().map(ScopeSet)
    }

    /// Parses the canonical JSON array the store keeps.
    pub fn from_json(text: &str) -> Result<ScopeSet, String> {
        let names: Vec<String> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        ScopeSet::parse(&names).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.names()).expect("a list of strings always serializes")
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|scope| scope.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Whether some scope held here implies `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|held| held.implies(needed))
    }

    /// Whether every scope in `requested` is implied by this set.
    pub fn covers(&self, requested: &ScopeSet) -> bool {
        requested.iter().all(|needed| self.allows(needed))
    }

    /// The first scope of `requested` not implied by this set.
    pub fn first_missing(&self, requested: &ScopeSet) -> Option<Scope> {
        requested.iter().find(|needed| !self.allows(*needed))
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).copied().collect())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names).unwrap()
    }

    #[test]
    fn every_scope_round_trips() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
        }
    }

    #[test]
    fn unknown_scope_is_refused_and_truncated() {
        assert_eq!(Scope::parse("operator.root"), Err(UnknownScope("operator.root".into())));
        let long = "x".repeat(10_000);
        let err = ScopeSet::parse(&[long.as_str()]).unwrap_err();
        assert!(err.to_string().len() < 100, "{err}");
    }

    #[test]
    fn implication_table() {
        // (held, needed, allowed)
        let rows = [
            ("operator.admin", "operator.read", true),
            ("operator.admin", "operator.talk.secrets", true),
            ("operator.admin", "operator.pairing", true),
            ("operator.write", "operator.read", true),
            ("operator.read", "operator.write", false),
            ("operator.pairing", "operator.read", false),
            ("operator.read", "operator.admin", false),
            ("operator.talk", "operator.talk.secrets", false),
            ("operator.talk.secrets", "operator.talk", false),
            ("operator.approvals", "operator.approvals", true),
        ];
        for (held, needed, allowed) in rows {
            assert_eq!(set(&[held]).allows(Scope::parse(needed).unwrap()), allowed, "{held} ⊇ {needed}");
        }
    }

    #[test]
    fn covers_and_first_missing() {
        let approved = set(&["operator.write", "operator.pairing"]);
        assert!(approved.covers(&set(&["operator.read", "operator.pairing"])));
        assert!(approved.covers(&ScopeSet::new()));
        assert_eq!(approved.first_missing(&set(&["operator.read", "operator.admin"])), Some(Scope::Admin));
    }

    #[test]
    fn json_is_canonical_and_sorted() {
        let scopes = set(&["operator.write", "operator.admin", "operator.write"]);
        assert_eq!(scopes.to_json(), r#"["operator.admin","operator.write"]"#);
        assert_eq!(ScopeSet::from_json(&scopes.to_json()).unwrap(), scopes);
        assert!(ScopeSet::from_json(r#"["bogus"]"#).is_err());
        assert!(ScopeSet::from_json("{}").is_err());
    }
}
