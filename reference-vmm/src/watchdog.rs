// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A run watchdog: if a run is still going after its timeout, a helper thread
//! signals the vCPU thread (repeatedly, until acknowledged) so `KVM_RUN`
//! returns `EINTR` and the loop can stop with
//! [`crate::stop::StopCause::Timeout`]. Needed for
//! hosts where a guest instruction never completes (on this nested host a
//! guest `vmcall` is re-entered forever without reaching KVM's handler).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The watchdog could not be armed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WatchdogError {
    /// Registering the handler of its real-time signal failed: arming would
    /// let the signal's default action kill the process, so every arm fails.
    #[error("registering the handler of signal {signal}")]
    SignalHandler {
        /// The signal.
        signal: i32,
        /// errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
}

/// The armed watchdog, lent to a closure by [`Watchdog::with`]: it cannot
/// leave the vCPU thread (`!Send`) nor outlive the closure, so it never
/// signals a thread that has exited.
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
    /// Tied to the thread that armed it.
    _not_send: std::marker::PhantomData<*const ()>,
}

extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn signal_number() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

impl Watchdog {
    /// Runs `f` on the calling (vCPU) thread with a watchdog armed for
    /// `timeout`; the watchdog is disarmed and its thread joined before this
    /// returns (also when `f` panics).
    pub fn with<R>(timeout: Duration, f: impl FnOnce(&Watchdog) -> R) -> Result<R, WatchdogError> {
        let w = Self::arm(timeout)?;
        Ok(f(&w))
    }

    fn arm(timeout: Duration) -> Result<Watchdog, WatchdogError> {
        static REGISTERED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
        (*REGISTERED.get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(signal_number(), on_signal)
        }))
        .map_err(|source| WatchdogError::SignalHandler {
            signal: signal_number(),
            source,
        })?;
        // SAFETY: pthread_self has no preconditions.
        #[allow(unsafe_code)]
        let me = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (f, d) = (fired.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let step = Duration::from_millis(5);
            let mut waited = Duration::ZERO;
            while waited < timeout {
                if d.load(Ordering::Acquire) {
                    return;
                }
                std::thread::park_timeout(step);
                waited += step;
            }
            f.store(true, Ordering::Release);
            while !d.load(Ordering::Acquire) {
                // SAFETY: `me` is the vCPU thread, alive until `done` is set:
                // the Watchdog is `!Send` and only lent by `with`, which drops
                // it (setting `done` and joining this thread) on the vCPU
                // thread before returning.
                #[allow(unsafe_code)]
                unsafe {
                    libc::pthread_kill(me, signal_number());
                }
                std::thread::park_timeout(step);
            }
        });
        Ok(Watchdog {
            fired,
            done,
            timeout,
            thread: Some(thread),
            _not_send: std::marker::PhantomData,
        })
    }

    /// The timeout passed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// The timeout it was armed with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
