#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmx_toolkit_fuzz::properties::vmm_snapshot(data));
