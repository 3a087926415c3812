//! What a write served from memory did to its key, as the consistency
//! journal (`crate::consistency`) records it.

/// The last operation recorded for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalOp {
    /// The key was written (set, incremented, given a TTL) in the fallback.
    Set,
    /// The key was deleted in the fallback.
    Delete,
}
