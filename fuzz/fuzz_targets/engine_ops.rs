//! Engine operations with injected faults and crashes on the simulated
//! disk, checked against a model after every reopen.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::engine_ops(data);
});
