//! The binary's one call that needs `unsafe` (the workspace denies it; this file alone allows
//! it), behind a safe function whose caller keeps its precondition.
#![allow(unsafe_code)]

/// Removes systemd's socket-activation variables (`LISTEN_PID`, `LISTEN_FDS`,
/// `LISTEN_FDNAMES`) from the environment once the sockets are taken, as the contract says and
/// `sd_listen_fds(3)` does with `unset_environment`.
///
/// Must be called while this process has one thread: `run` calls it before `bind` starts any
/// (the logger starts none).
pub fn forget_socket_activation() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: `remove_var` is safe while no other thread reads or writes the environment;
        // this runs before the server starts its threads, and nothing before it starts one.
        unsafe { std::env::remove_var(name) };
    }
}
