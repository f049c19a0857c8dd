//! The mode-switch engine's library side: everything about switching
//! between real mode, protected mode, 32-bit paging, PAE paging and long
//! mode that can be decided without executing it.
//!
//! * [`layout`]: the low window below 32 KiB the engine runs in, the GDT,
//!   the real-mode IVT and the 32/64-bit IDTs it needs there;
//! * [`probe`]: probe ops, their encoding, results and expectations;
//! * [`paging`]: page-table entry encoders, a frame allocator, a reference
//!   translation;
//! * [`space`]: the address spaces of the mode walk, built in guest frames;
//! * [`walk`]: the walk's stops and probe program with the expected outcome
//!   of every probe;
//! * [`engine`]: loading a program into the low window and judging the
//!   results, one verdict per check.
//!
//! The engine itself (trampolines and interpreters, in assembly, because
//! stable Rust on this target only emits 64-bit code) is the binary's
//! `bare::modes`, reached through [`crate::machine::Machine`].

pub mod engine;
pub mod layout;
pub mod paging;
pub mod probe;
pub mod space;
pub mod walk;

/// The operating modes a stop can run in; the numbers are the engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Mode {
    /// Real-address mode, CR0.PE = 0 (SDM Vol. 3A 21.1).
    Real = 0,
    /// Protected mode without paging (SDM Vol. 3A 10.9.1).
    Prot = 1,
    /// 32-bit paging, with CR4.PSE = 1 or 0 as the stop sets it (SDM Vol. 3A 4.3).
    Paging32 = 2,
    /// PAE paging (SDM Vol. 3A 4.4).
    Pae = 3,
    /// IA-32e mode, 64-bit code, with the walk's own PML4 (SDM Vol. 3A 4.5, 10.8.5).
    Long = 4,
}

impl Mode {
    /// Short name for check details.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Prot => "prot",
            Mode::Paging32 => "pg32",
            Mode::Pae => "pae",
            Mode::Long => "long",
        }
    }
}
