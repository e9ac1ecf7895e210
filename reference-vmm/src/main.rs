// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `reference-vmm`: a small, real VMM on /dev/kvm. See the crate README.

fn main() {
    let t0 = std::time::Instant::now();
    // Behave like other command-line tools when the reader of stdout goes away
    // (`reference-vmm caps | head`): end quietly instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    std::process::exit(reference_vmm::cli::main(t0));
}
