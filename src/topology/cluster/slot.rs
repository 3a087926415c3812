//! Which of Redis Cluster's 16384 hash slots a key belongs to.
//!
//! `CRC16(key) mod 16384` with the XMODEM polynomial (`0x1021`, initial
//! value 0, no reflection), as the cluster specification gives it; when the
//! key holds a hash tag (the bytes between the first `{` and the next `}`,
//! if that is not empty), only the tag is hashed, so that `{user1}:a` and
//! `{user1}:b` land in the same slot. Computed here (a bitwise CRC, no
//! table) rather than through redis-rs' `cluster` feature, which would pull
//! in its whole cluster client for these few lines.

/// Hash slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// CRC16-XMODEM of `bytes`.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: its hash tag when it has a non-empty
/// one, else the whole key.
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let after = key.get(open.saturating_add(1)..).unwrap_or_default();
        if let Some(close) = after.iter().position(|&b| b == b'}') {
            if close > 0 {
                return after.get(..close).unwrap_or(key);
            }
        }
    }
    key
}

/// The hash slot of `key`.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_specification() {
        // The check value the cluster specification gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"user1"), 8106);
    }

    #[test]
    fn hash_tags_are_honoured() {
        assert_eq!(key_slot(b"{user1}:a"), key_slot(b"user1"));
        assert_eq!(key_slot(b"{user1}:a"), key_slot(b"{user1}:b"));
        assert_eq!(key_slot(b"x{user1}y{z}"), key_slot(b"user1"));
        // An empty tag, or no closing brace: the whole key.
        assert_eq!(hash_tag(b"{}user1"), b"{}user1");
        assert_eq!(hash_tag(b"{user1"), b"{user1");
        assert_eq!(hash_tag(b"a}{b}"), b"b");
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
    }
}
