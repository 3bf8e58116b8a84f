//! Logging to stderr, filtered by `RUST_LOG` (default `info`), and never a secret at any level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Libraries whose trace output holds whole frames, credentials included (tungstenite logs every frame it
/// sends or receives at `trace`): capped at `debug` whatever `RUST_LOG` asks.
const CAPPED_AT_DEBUG: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// The filter: `RUST_LOG` (or `info`), with the libraries above capped.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter =
        rust_log.and_then(|directives| EnvFilter::try_new(directives).ok()).unwrap_or_else(|| EnvFilter::new("info"));
    for target in CAPPED_AT_DEBUG {
        let directive: Directive = format!("{target}=debug").parse().expect("a valid directive");
        filter = filter.add_directive(directive);
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
