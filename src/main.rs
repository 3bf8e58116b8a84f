use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _log = pairgate::cli::logging::init();
    let cli = pairgate::cli::Cli::parse();
    if !matches!(cli.command, pairgate::cli::Command::Serve(_)) {
        pairgate::cli::quiet_on_closed_stdout();
    }
    match pairgate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            // Not eprintln!, which panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "pairgate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
