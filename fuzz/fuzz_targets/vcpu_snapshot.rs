#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmx_toolkit_fuzz::properties::vcpu_snapshot(data));
