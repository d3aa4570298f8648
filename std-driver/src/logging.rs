//! Logging for the `dmsg` program: the `log` facade through `env_logger`, to standard error.
//!
//! Quiet by default (errors only: a bug report); `-v` shows the links' life (connects, peer
//! LNK_CONN, why a link closed, retries), `-vv` adds transactions and details, `-vvv` every
//! one-way frame. Without `-v`, `RUST_LOG` is honoured (e.g. `RUST_LOG=dmsg_std=debug`).

use log::LevelFilter;

/// The level for a `-v` count.
pub fn level(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::Error,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger (once per process; later calls change nothing).
pub fn init(verbose: u8) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level(verbose));
    if verbose == 0 {
        if let Ok(spec) = std::env::var("RUST_LOG") {
            b.parse_filters(&spec);
        }
    }
    b.format_target(false)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr);
    let _ = b.try_init();
}
