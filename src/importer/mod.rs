//! Importers of existing OpenClaw pairing and sub-agent state into pairgate. They return a report; the
//! CLI prints it. Never imports a front end.

pub mod openclaw;
