//! The guest unikernel's host-testable logic (placeholder, filled by the guest work).
#![cfg_attr(not(test), no_std)]
