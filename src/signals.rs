//! SIGTERM / SIGINT: remember that one arrived; waits and the agent runner poll `received()` and stop
//! cleanly (child stopped, token file removed, state unchanged).
//!
//! Two libc calls are declared by hand rather than pulling in a crate for them: `signal(2)` to
//! install a handler that only stores an atomic, and `kill(2)` to forward the stop to the agent's
//! process group. Both exist with these signatures in glibc and musl on every Linux architecture.

use std::sync::atomic::{AtomicI32, Ordering};

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}

extern "C" fn on_signal(signum: i32) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signum, Ordering::SeqCst);
}

/// Install the handlers. Called once from `main`.
pub fn install() {
    let handler = on_signal as extern "C" fn(i32) as usize;
    // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
    unsafe {
        signal(SIGINT, handler);
        signal(SIGTERM, handler);
    }
}

/// Which stop signal arrived, if any.
pub fn received() -> Option<&'static str> {
    match RECEIVED.load(Ordering::SeqCst) {
        SIGINT => Some("SIGINT"),
        SIGTERM => Some("SIGTERM"),
        _ => None,
    }
}

/// Send `sig` to every process in the group `pgid` (the agent and whatever it started).
pub fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: plain syscall wrapper; a negative pid addresses the process group.
    unsafe {
        kill(-(pgid as i32), sig);
    }
}
