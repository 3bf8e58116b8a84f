//! Logging to stderr, filtered by `RUST_LOG` (default `info`), and never a secret at any level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Libraries whose trace output holds whole frames, credentials included (tungstenite logs every frame it
/// sends or receives at `trace`): capped at `debug` whatever `RUST_LOG` asks.
const CAPPED_AT_DEBUG: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// The filter: `RUST_LOG` (or `info`), with the libraries above capped. A cap only lowers: the libraries get
/// `debug` only where `RUST_LOG` asks for `trace` somewhere (else it would raise them, at `info`, to `debug`).
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let parse = || rust_log.and_then(|directives| EnvFilter::try_new(directives).ok());
    let mut filter = parse().unwrap_or_else(|| EnvFilter::new("info"));
    if filter.max_level_hint().is_some_and(|most| most >= tracing::level_filters::LevelFilter::TRACE) {
        for target in CAPPED_AT_DEBUG {
            let directive: Directive = format!("{target}=debug").parse().expect("a valid directive");
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Log lines queued for the writer thread at most (a few MiB): beyond it, new lines are dropped.
pub const QUEUED_LINES: usize = 10_000;

/// Starts logging. Lines are handed to a writer thread of their own, and dropped rather than waited for
/// when it falls behind: a log reader that stalls or goes away (`pairgate serve 2>&1 | head -1`) can
/// never block the server, nor keep it from stopping. Hold the guard until the end of `main`; dropping
/// it writes what is still queued; `main` waits for that a moment only.
pub fn init() -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let rust_log = std::env::var("RUST_LOG").ok();
    // Colour only for a person at a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("pairgate-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter(rust_log.as_deref())).with_writer(writer).with_ansi(colour).init();
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether an event of `target` at `level` is logged under `RUST_LOG=rust_log`.
    fn logged(rust_log: Option<&str>, target: &str, level: Level) -> bool {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Seen(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let subscriber = tracing_subscriber::registry().with(filter(rust_log)).with(Seen(seen.clone()));
        tracing::subscriber::with_default(subscriber, || match (target, level) {
            ("tungstenite", Level::TRACE) => tracing::trace!(target: "tungstenite", "frame"),
            ("tungstenite", Level::DEBUG) => tracing::debug!(target: "tungstenite", "handshake done"),
            ("tungstenite", _) => tracing::info!(target: "tungstenite", "info"),
            (_, Level::TRACE) => tracing::trace!(target: "pairgate", "trace"),
            _ => tracing::debug!(target: "pairgate", "debug"),
        });
        seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn frame_tracing_is_capped_at_debug_and_never_raised() {
        assert!(!logged(None, "tungstenite", Level::DEBUG), "the default info does not show the library's debug");
        assert!(!logged(Some("info"), "tungstenite", Level::DEBUG));
        assert!(logged(Some("debug"), "tungstenite", Level::DEBUG));
        assert!(!logged(Some("trace"), "tungstenite", Level::TRACE), "frames, credentials included, never");
        assert!(logged(Some("trace"), "tungstenite", Level::DEBUG));
        assert!(!logged(Some("tungstenite=trace"), "tungstenite", Level::TRACE));
        assert!(logged(Some("trace"), "pairgate", Level::TRACE));
        assert!(!logged(None, "tungstenite", Level::TRACE));
    }
}
