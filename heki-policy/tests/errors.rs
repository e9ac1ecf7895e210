// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error prints its own message once; an ioctl error is the `source()`, never
//! repeated in the message (anyhow's `{:#}` would print it twice).

use heki_policy::HekiAbi;

#[test]
fn pure_errors_are_leaves_with_one_message() {
    let abi = "rfc-v9".parse::<HekiAbi>().unwrap_err();
    assert_eq!(test_support::assert_message_once(&abi).len(), 1);
    // A Heki exit payload too short for its header.
    let short = heki_policy::exit::decode_kvm_run(Some(HekiAbi::RfcV2), &[0; 4]).unwrap_err();
    assert_eq!(test_support::assert_message_once(&short).len(), 1);
}

#[cfg(feature = "kvm")]
#[test]
fn kvm_errors_keep_the_errno_in_source() {
    use heki_policy::kvm::KvmError;
    let e = KvmError::EnableCap {
        cap: 240,
        source: kvm_ioctls::Error::new(22),
    };
    assert_eq!(
        test_support::assert_message_once(&e),
        [
            "KVM_ENABLE_CAP(240) failed",
            "Invalid argument (os error 22)"
        ]
    );
    let e = KvmError::CreateVm(kvm_ioctls::Error::new(24));
    assert_eq!(test_support::assert_message_once(&e).len(), 2);
}
