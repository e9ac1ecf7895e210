#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmx_toolkit_fuzz::properties::notify_options(data));
