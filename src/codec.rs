//! The value codec: LZ4 compression of cache values above a threshold.
//!
//! It sits between the cache API and every place a value goes (Redis, the
//! write-through copy, the outage journal's memory store, reconciliation
//! replay): [`Codec::encode`] runs once on the way in, [`Codec::decode`]
//! once on the way out, both in `client/cache.rs`. It never decides which
//! keys are tracked or when; the consistency rules see opaque bytes.
//!
//! # Format
//!
//! ```text
//! FF 72 72 31 | original length, u32 little-endian | LZ4 block (no frame)
//!  \xFF "rr1"
//! ```
//!
//! The first byte, `0xFF`, never occurs in UTF-8, so no text value (JSON,
//! HTML, ...) is mistaken for a compressed one. A value without the header
//! is returned as stored, so values written by other clients (or by this
//! one with compression off) read correctly. A value that starts with the
//! header but does not decode is returned as stored too (logged at DEBUG).
//!
//! # Bounds
//!
//! The claimed length is checked before anything is allocated: at most
//! Redis' 512 MiB value limit, and at most what the compressed bytes can
//! expand to (an LZ4 byte yields at most 255 bytes of output), so a small
//! value claiming a huge length costs nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// The header's first four bytes.
pub(crate) const MAGIC: [u8; 4] = [0xFF, b'r', b'r', b'1'];

/// Magic + the original length (u32, little-endian).
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 4;

/// Largest value: Redis' own limit for a string.
pub(crate) const MAX_VALUE_BYTES: usize = 512 << 20;

/// Most bytes one LZ4 input byte can decode to (a match-length extension
/// byte of 255), plus slack for the last sequence.
const MAX_EXPANSION: usize = 255;

/// Counters of the codec, copied into [`Stats`](crate::Stats).
#[derive(Debug, Default)]
pub(crate) struct CodecStats {
    /// Bytes of the values that were compressed, before compression.
    pub(crate) bytes_in: AtomicU64,
    /// The same values' bytes as stored (header included).
    pub(crate) bytes_out: AtomicU64,
    /// Values stored compressed.
    pub(crate) compressed: AtomicU64,
    /// Values read back and decompressed.
    pub(crate) decompressed: AtomicU64,
    /// Values that carried the header but did not decode (returned as stored).
    pub(crate) undecodable: AtomicU64,
}

impl CodecStats {
    /// Copies the counters into `s`.
    pub(crate) fn fill(&self, s: &mut crate::stats::Stats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.compression_input_bytes = get(&self.bytes_in);
        s.compression_output_bytes = get(&self.bytes_out);
        s.values_compressed = get(&self.compressed);
        s.values_decompressed = get(&self.decompressed);
        s.values_undecodable = get(&self.undecodable);
    }
}

/// The codec of one client: the threshold and its counters.
#[derive(Debug)]
pub(crate) struct Codec {
    /// `None`: values are stored as given.
    threshold: Option<usize>,
    pub(crate) stats: CodecStats,
}

impl Codec {
    /// A codec compressing values of at least `threshold` bytes. Without
    /// the `compression` feature the threshold is ignored.
    pub(crate) fn new(threshold: Option<usize>) -> Codec {
        Codec {
            threshold: threshold.filter(|_| cfg!(feature = "compression")),
            stats: CodecStats::default(),
        }
    }

    /// The value as it is stored: compressed when it is at least the
    /// threshold and compression saves at least 1/8 of it, as given
    /// otherwise.
    ///
    /// With compression on, a value that itself starts with the header is
    /// always stored with a header of its own, so it reads back exactly.
    pub(crate) fn encode(&self, value: Vec<u8>) -> Vec<u8> {
        let Some(threshold) = self.threshold else {
            return value;
        };
        let looks_compressed = value.starts_with(&MAGIC);
        if value.len() < threshold && !looks_compressed {
            return value;
        }
        let Some(compressed) = compress(&value) else {
            return value;
        };
        let saved = value.len().saturating_sub(compressed.len());
        // At least 1/8 saved (rounded up), or the value is kept as it is.
        if !looks_compressed && saved < value.len().div_ceil(8) {
            return value;
        }
        let s = &self.stats;
        s.bytes_in.fetch_add(value.len() as u64, Ordering::Relaxed);
        s.bytes_out
            .fetch_add(compressed.len() as u64, Ordering::Relaxed);
        s.compressed.fetch_add(1, Ordering::Relaxed);
        compressed
    }

    /// The value as it was given to [`Codec::encode`]: decompressed when it
    /// carries the header and decodes, as stored otherwise. Runs whatever
    /// the threshold (a value compressed by another client reads back);
    /// without the `compression` feature, returns `stored` as is.
    pub(crate) fn decode(&self, stored: Vec<u8>) -> Vec<u8> {
        if !stored.starts_with(&MAGIC) {
            return stored;
        }
        match decompress(&stored) {
            Ok(value) => {
                self.stats.decompressed.fetch_add(1, Ordering::Relaxed);
                value
            }
            Err(why) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "a value of {} bytes starts with the compression header but {why}: returned as stored",
                    stored.len()
                );
                stored
            }
        }
    }
}

/// Why a value with the header did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Shorter than the header.
    Truncated,
    /// The claimed length is above the 512 MiB limit or above what the
    /// compressed bytes can expand to.
    TooLarge(u64),
    /// The LZ4 block is malformed, or decodes to another length.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))] // constructed only with it
    Corrupt,
    /// Built without the `compression` feature.
    #[cfg_attr(feature = "compression", allow(dead_code))] // constructed only without it
    Unsupported,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("is shorter than the header"),
            DecodeError::TooLarge(n) => write!(
                f,
                "claims {n} bytes, more than the limit or than its compressed bytes can hold"
            ),
            DecodeError::Corrupt => f.write_str("is not a valid LZ4 block of the length it claims"),
            DecodeError::Unsupported => f.write_str("this build has no `compression` feature"),
        }
    }
}

/// Header + LZ4 block of `value`; `None` when it is too large to claim.
#[cfg(feature = "compression")]
pub(crate) fn compress(value: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(value.len())
        .ok()
        .filter(|_| value.len() <= MAX_VALUE_BYTES)?;
    let bound = lz4_flex::block::get_maximum_output_size(value.len());
    let mut out = vec![0u8; HEADER_LEN.checked_add(bound)?];
    out[..MAGIC.len()].copy_from_slice(&MAGIC);
    out[MAGIC.len()..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    let n = lz4_flex::block::compress_into(value, &mut out[HEADER_LEN..]).ok()?;
    out.truncate(HEADER_LEN.checked_add(n)?);
    Some(out)
}

/// Without the feature nothing is compressed.
#[cfg(not(feature = "compression"))]
pub(crate) fn compress(_value: &[u8]) -> Option<Vec<u8>> {
    None
}

/// The claimed length of a value with the header, checked against the
/// limits before anything is allocated.
pub(crate) fn claimed_len(stored: &[u8]) -> Result<usize, DecodeError> {
    let len_bytes: [u8; 4] = stored
        .get(MAGIC.len()..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Truncated)?;
    let claimed = u32::from_le_bytes(len_bytes);
    let block = stored.len().saturating_sub(HEADER_LEN);
    let expandable = block.saturating_mul(MAX_EXPANSION);
    match usize::try_from(claimed) {
        Ok(n) if n <= MAX_VALUE_BYTES && n <= expandable => Ok(n),
        _ => Err(DecodeError::TooLarge(u64::from(claimed))),
    }
}

/// The original value of `stored` (which starts with the header).
#[cfg(feature = "compression")]
pub(crate) fn decompress(stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let n = claimed_len(stored)?;
    let block = stored.get(HEADER_LEN..).ok_or(DecodeError::Truncated)?;
    let mut out = vec![0u8; n];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(written) if written == n => Ok(out),
        _ => Err(DecodeError::Corrupt),
    }
}

/// Without the feature a compressed value is returned as stored.
#[cfg(not(feature = "compression"))]
pub(crate) fn decompress(stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    claimed_len(stored)?;
    Err(DecodeError::Unsupported)
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use super::*;

    fn json(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 64);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("{{\"id\":{i},\"name\":\"user {i}\",\"active\":true}},").as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    #[test]
    fn round_trip_above_the_threshold() {
        let codec = Codec::new(Some(512));
        let value = json(4096);
        let stored = codec.encode(value.clone());
        assert!(stored.starts_with(&MAGIC));
        assert!(stored.len() < value.len() / 2, "{}", stored.len());
        assert_eq!(codec.decode(stored.clone()), value);
        let s = &codec.stats;
        assert_eq!(s.compressed.load(Ordering::Relaxed), 1);
        assert_eq!(s.decompressed.load(Ordering::Relaxed), 1);
        assert_eq!(s.bytes_in.load(Ordering::Relaxed), 4096);
        assert_eq!(s.bytes_out.load(Ordering::Relaxed), stored.len() as u64);
    }

    #[test]
    fn below_the_threshold_or_off_is_stored_as_given() {
        let value = json(511);
        assert_eq!(Codec::new(Some(512)).encode(value.clone()), value);
        let big = json(100_000);
        assert_eq!(Codec::new(None).encode(big.clone()), big);
    }

    #[test]
    fn compressed_only_when_it_saves_an_eighth() {
        // Pseudo-random bytes do not compress.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let codec = Codec::new(Some(0));
        assert_eq!(codec.encode(noise.clone()), noise);
        // Half noise, half zeros: saves well over an eighth.
        let mut half = noise[..2048].to_vec();
        half.resize(4096, 0);
        assert!(codec.encode(half).starts_with(&MAGIC));
        // 1/16 zeros: saves less than an eighth.
        let mut little = noise[..3840].to_vec();
        little.resize(4096, 0);
        assert_eq!(codec.encode(little.clone()), little);
    }

    #[test]
    fn foreign_values_read_as_stored() {
        let codec = Codec::new(Some(512));
        for v in [
            b"".to_vec(),
            b"plain".to_vec(),
            vec![0xFF, b'r', b'r'],
            vec![0xFF, b'r', b'r', b'1', 1, 0],
            // Claims 4 GiB.
            vec![0xFF, b'r', b'r', b'1', 0xFF, 0xFF, 0xFF, 0xFF, 0],
            // Claims 100 bytes from a 1-byte block that is not LZ4.
            vec![0xFF, b'r', b'r', b'1', 100, 0, 0, 0, 0xF0],
        ] {
            assert_eq!(codec.decode(v.clone()), v);
        }
        assert_eq!(codec.stats.decompressed.load(Ordering::Relaxed), 0);
        assert_eq!(codec.stats.undecodable.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_claimed_length_is_bounded_before_allocating() {
        let mut bomb = MAGIC.to_vec();
        bomb.extend_from_slice(&(512u32 << 20).to_le_bytes());
        bomb.extend_from_slice(&[0u8; 16]);
        assert!(matches!(claimed_len(&bomb), Err(DecodeError::TooLarge(_))));
        let mut over = MAGIC.to_vec();
        over.extend_from_slice(&((512u32 << 20) + 1).to_le_bytes());
        over.resize(over.len() + (4 << 20), 0);
        assert!(matches!(claimed_len(&over), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn a_value_that_looks_compressed_is_wrapped() {
        let codec = Codec::new(Some(1 << 20));
        let mut tricky = MAGIC.to_vec();
        tricky.extend_from_slice(&[5, 0, 0, 0, 0x50, b'h', b'e', b'l', b'l', b'o']);
        // It would decode to "hello" if stored as given.
        assert_eq!(codec.decode(tricky.clone()), b"hello");
        let stored = codec.encode(tricky.clone());
        assert_ne!(stored, tricky);
        assert_eq!(codec.decode(stored), tricky);
    }

    #[test]
    fn extremes_round_trip() {
        // 1 MiB of zeros: the best ratio LZ4 reaches, within the bound.
        for v in [Vec::new(), vec![7u8], vec![0u8; 1 << 20]] {
            let stored = compress(&v).unwrap_or_default();
            assert_eq!(decompress(&stored), Ok(v));
        }
    }
}
