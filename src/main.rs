use clap::Parser;

/// How long the end of `main` waits for queued log lines to be written.
const LOG_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let log = pairgate::cli::logging::init();
    let cli = pairgate::cli::Cli::parse();
    if !matches!(cli.command, pairgate::cli::Command::Serve(_)) {
        pairgate::cli::quiet_on_closed_stdout();
    }
    let code = match pairgate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            // Not eprintln!, which panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "pairgate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // The log's writer may be stuck on a reader that stopped reading, and dropping its guard can then
    // block for ever (it may even print to that same pipe): drop it on a thread of its own, wait a little
    // for what is queued, and exit regardless.
    let (flushed, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(log);
        let _ = flushed.send(());
    });
    let _ = done.recv_timeout(LOG_FLUSH_WAIT);
    code
}
