// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error prints its own message once; an ioctl error is the `source()`, never
//! repeated in the message (anyhow's `{:#}` would print it twice).

#![cfg(all(feature = "kvm", target_arch = "x86_64"))]

use vcpu_events::kvm::kick::KickError;
use vcpu_events::kvm::KvmError;
use vcpu_events::restore::RestoreStepError;

fn einval() -> kvm_ioctls::Error {
    kvm_ioctls::Error::new(22)
}

#[test]
fn ioctl_errors_keep_the_errno_in_source() {
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(KvmError::Interrupt {
            vector: 0x20,
            source: einval(),
        }),
        Box::new(KvmError::GetVcpuEvents(einval())),
        Box::new(KvmError::SetVcpuEvents(einval())),
        Box::new(KvmError::GetRegs(einval())),
        Box::new(KvmError::SetRegs(einval())),
        Box::new(KvmError::EnableCap {
            cap: 218,
            source: einval(),
        }),
        Box::new(KickError::IrqchipProbe(einval())),
        Box::new(KickError::Run(einval())),
        Box::new(KickError::Kvm(KvmError::SetVcpuEvents(einval()))),
        Box::new(RestoreStepError::Events(einval())),
        Box::new(RestoreStepError::Regs(einval())),
    ];
    for e in &errors {
        let chain = test_support::assert_message_once(e.as_ref());
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[1], "Invalid argument (os error 22)");
    }
}
