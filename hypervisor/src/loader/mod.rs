//! Guest image loader (placeholder until the loader lands).
