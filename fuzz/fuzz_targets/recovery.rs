//! Recovery and the reader over a log whose segments hold any bytes: a typed
//! error or a recovered log, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::recovery(data);
});
