//! VMX support: VMCS field encodings, capability reconciliation and exit
//! decoding (pure logic, host-tested).
pub mod caps;
pub mod errors;
pub mod exit_reason;
pub mod fields;
