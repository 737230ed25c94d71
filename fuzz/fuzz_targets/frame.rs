//! Frame decoding (length, CRC, LSN, payload validation) over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let seed = data.get(..4).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()));
    waymark_engine::__fuzz::frame(data, seed);
});
