//! Key decoding: any bytes read as view keys, and components encoded as
//! keys that must decode back and stay inside their scopes' ranges.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    waymark_engine::__fuzz::view_key(data);
});
