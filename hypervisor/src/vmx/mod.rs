//! VMX: everything about Intel's virtual-machine extensions, and the only
//! place VMX `unsafe` lives (in [`instr`]).
//!
//! * [`fields`]: typed VMCS field encodings (pure);
//! * [`ept`]: the identity extended page tables of `mmu=ept` (pure);
//! * [`caps`]: capability MSRs, control reconciliation, fixed CR bits,
//!   IA32_FEATURE_CONTROL (pure);
//! * [`exit_reason`]: exit reasons and qualification decoders (pure);
//! * [`errors`]: VM-instruction error texts and VMfail (pure);
//! * [`instr`]: VMXON/VMCLEAR/VMPTRLD/VMREAD/VMWRITE, the entry/exit stub
//!   and the VMCS dump.
pub mod caps;
pub mod ept;
pub mod errors;
pub mod exit_reason;
pub mod fields;
pub mod instr;
pub mod guest_state;
