//! Segment header decoding over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::segment_header(data);
});
