// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A run watchdog: if a run is still going after its timeout, a helper thread
//! signals the vCPU thread (repeatedly, until acknowledged) so `KVM_RUN`
//! returns `EINTR` and the loop can stop with [`Outcome::Timeout`]. Needed for
//! hosts where a guest instruction never completes (on this nested host a
//! guest `vmcall` is re-entered forever without reaching KVM's handler).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::action::Outcome;
use crate::apply::Stop;
use crate::vmm::VmmError;

/// The armed watchdog; disarmed on drop.
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn signal_number() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

impl Watchdog {
    /// Arms a watchdog for the calling (vCPU) thread.
    pub fn arm(timeout: Duration) -> Result<Watchdog, VmmError> {
        static REGISTER: Once = Once::new();
        let mut reg = Ok(());
        REGISTER.call_once(|| {
            reg = vmm_sys_util::signal::register_signal_handler(signal_number(), on_signal);
        });
        reg.map_err(|e| VmmError::Config(format!("watchdog signal handler: {e}")))?;
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
                // SAFETY: `me` is the vCPU thread, alive until `done` is set
                // (the Watchdog is dropped on that thread before it exits).
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
        })
    }

    /// The timeout passed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// The stop report: where the vCPU was stuck.
    pub fn stop(&self, vcpu: &VcpuFd) -> Stop {
        let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
        Stop {
            outcome: Outcome::Timeout,
            reason: format!(
                "no end after {:?}: the vCPU is at rip 0x{rip:x}; the watchdog interrupted KVM_RUN",
                self.timeout
            ),
        }
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
