//! rkyv validation and decoding of every view record over any bytes: what
//! redb hands back from `views.redb`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::view_record(data);
});
