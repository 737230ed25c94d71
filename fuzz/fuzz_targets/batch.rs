//! rkyv validation and decoding of a batch payload over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::batch(data);
});
