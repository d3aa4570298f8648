//! Ctrl-C (SIGINT) and SIGTERM for the long-running subcommands (`hub`, `leaf`): the first
//! signal asks for a graceful stop (links closed cleanly, sessions with FIN), a second one
//! ends the process at once.
//!
//! Built on `signal-hook`'s flag handlers (the handler only stores to an atomic, which is
//! async-signal-safe); the subcommand polls [`Interrupt::raised`] between events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Exit status after a second interrupt (128 + SIGINT, as shells report it).
pub const FORCED_EXIT: i32 = 130;

/// The interrupt flag of this process.
#[derive(Clone, Debug)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers for SIGINT and SIGTERM. If that fails (it should not), the
    /// signals keep their default action (the process ends at once) and a warning is logged.
    pub fn install() -> Interrupt {
        let raised = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // The forced exit first: armed only once the flag is set by a first signal.
            let r = flag::register_conditional_shutdown(sig, FORCED_EXIT, raised.clone())
                .and_then(|_| flag::register(sig, raised.clone()));
            if let Err(e) = r {
                log::warn!("cannot catch signal {sig} ({e}); it will end the process at once");
            }
        }
        Interrupt(raised)
    }

    /// True once a signal arrived.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
