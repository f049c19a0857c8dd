//! Shadow page cache (placeholder until the MMU core lands).
