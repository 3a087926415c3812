//! The `codec` target's check: the value codec never panics, never
//! allocates more than a value's bound, and round-trips.

use crate::codec::{self, Codec, HEADER_LEN, MAGIC, MAX_VALUE_BYTES};

/// Runs `bytes` through the decoder (as stored, and behind the header, so
/// that the LZ4 path is reached) and through a compress/decompress round
/// trip. Panics on a panic, a wrong round trip, or a decoded value whose
/// length is not the one its header claims.
pub fn check_codec(bytes: &[u8]) {
    let codec = Codec::new(Some(0));

    // Whatever is stored reads back without a panic: as stored, or as the
    // value its header claims, of exactly that length.
    let forged = [&MAGIC[..], bytes].concat();
    for stored in [bytes.to_vec(), forged] {
        let claimed = codec::claimed_len(&stored).ok();
        let read = codec.decode(stored.clone());
        if read != stored {
            assert!(stored.starts_with(&MAGIC), "only a header changes a value");
            let claimed = claimed.unwrap_or(usize::MAX);
            assert_eq!(read.len(), claimed, "decoded to another length");
            assert!(read.len() <= MAX_VALUE_BYTES);
            let block = stored.len() - HEADER_LEN;
            assert!(
                read.len() <= block.saturating_mul(255),
                "beyond the expansion bound"
            );
        }
    }

    // Every value comes back as it was given, compressed or not.
    let stored = codec.encode(bytes.to_vec());
    if stored != bytes {
        assert!(stored.starts_with(&MAGIC));
    }
    assert_eq!(codec.decode(stored), bytes, "round trip");
}
