//! The one unsafe corner of the runner: moving everything the runner and
//! its children print to stderr, so that stdout carries only the TAP
//! stream of `cargo xtask test --format tap`.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

/// Points file descriptor 1 at stderr and returns a `File` for the
/// original stdout. Everything printed afterwards (by this process or the
/// cargo, Bochs and QEMU processes it starts) goes to stderr.
pub fn divert_stdout_to_stderr() -> std::io::Result<File> {
    use std::io::Write;
    std::io::stdout().flush()?;
    let out = std::io::stdout().as_raw_fd();
    let err = std::io::stderr().as_raw_fd();
    // SAFETY: dup(2) on our own open stdout; it has no memory-safety
    // preconditions and returns a new descriptor or -1.
    let saved = unsafe { libc::dup(out) };
    if saved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `saved` is a descriptor we just created and own exclusively;
    // the File takes over closing it.
    let file = unsafe { File::from_raw_fd(saved) };
    // SAFETY: dup2(2) of two descriptors this process has open (stderr onto
    // stdout); Rust's stdout handle keeps writing to fd 1, now stderr.
    if unsafe { libc::dup2(err, out) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}
