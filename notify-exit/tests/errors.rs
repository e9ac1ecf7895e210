// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error prints its own message once; an ioctl error is the `source()`, never
//! repeated in the message (anyhow's `{:#}` would print it twice).

use notify_exit::{decode, NotifyCapArg, NotifyConfig};

#[test]
fn pure_errors_are_leaves_with_one_message() {
    let config = "notify-vmexit=sometimes"
        .parse::<NotifyConfig>()
        .unwrap_err();
    assert_eq!(test_support::assert_message_once(&config).len(), 1);
    let arg = NotifyCapArg::decode(0).unwrap_err();
    assert_eq!(test_support::assert_message_once(&arg).len(), 1);
    let exit = decode(kvm_bindings::KVM_EXIT_HLT, &[]).unwrap_err();
    assert_eq!(test_support::assert_message_once(&exit).len(), 1);
}

#[cfg(feature = "kvm")]
#[test]
fn kvm_setup_errors_keep_the_errno_in_source() {
    use notify_exit::kvm::KvmSetupError;
    let e = KvmSetupError::EnableCap {
        cap: notify_exit::KVM_CAP_X86_NOTIFY_VMEXIT,
        arg: 3,
        source: kvm_ioctls::Error::new(22),
    };
    assert_eq!(
        test_support::assert_message_once(&e),
        [
            "KVM_ENABLE_CAP(219, 0x3) failed",
            "Invalid argument (os error 22)"
        ]
    );
    let e = KvmSetupError::CreateVm(kvm_ioctls::Error::new(24));
    assert_eq!(test_support::assert_message_once(&e).len(), 2);
}
