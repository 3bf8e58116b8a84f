//! Moving state into pairgate: importers of existing OpenClaw pairing and sub-agent state.

pub mod openclaw;
