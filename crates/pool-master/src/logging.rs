//! Log output of the pool-ha programs: `RUST_LOG` filters (default
//! `info`), lines go to stderr, coloured only on a terminal.

/// Set up logging for a program; call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
