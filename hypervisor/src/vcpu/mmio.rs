//! Emulating a guest access to memory-mapped I/O: the only MMIO Quadrant
//! has is the xAPIC page (`super::apic`). Under shadow paging the page is
//! never mapped in the shadow, so every access faults (the walk ends
//! outside guest RAM); under EPT it is outside the identity map, so every
//! access is an EPT violation. Either way the instruction is decoded here
//! (iced-x86) and the vCPU performs the register access.
//!
//! The APIC registers are 32-bit words accessed with aligned 32-bit loads
//! and stores (SDM Vol. 3A 11.4.1: "all 32-bit registers should be accessed
//! using 128-bit aligned 32-bit loads or stores"). Loads are `MOV r32, m32`
//! (decoded here); stores are whatever [`super::ptwrite::emulate`] decodes
//! (MOV, and the read-modify-write forms AND/OR/XOR/XCHG/CMPXCHG a compiler
//! makes of a volatile read and write, e.g. `or dword [apic + 0xf0], 0x1ff`)
//! at a width of 4. Anything else is refused by name (the caller stops the
//! run as `unsupported`).

use super::ptwrite::write_reg;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// A decoded MMIO load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioLoad {
    /// The destination register; apply with [`load_result`].
    pub dest: Register,
    /// Instruction length.
    pub len: u8,
}

/// Decodes the instruction in `bytes` (a `bitness`-bit code segment) as a
/// 32-bit MOV load from the MMIO page; `None` when it is something else
/// (a store: see [`super::ptwrite::emulate`]).
pub fn decode_load(bytes: &[u8], bitness: u32) -> Option<MmioLoad> {
    let ins = Decoder::new(bitness, bytes, DecoderOptions::NONE).decode();
    let load = !ins.is_invalid()
        && ins.mnemonic() == Mnemonic::Mov
        && ins.op_count() == 2
        && ins.op0_kind() == OpKind::Register
        && ins.op1_kind() == OpKind::Memory
        && ins.memory_size().size() == 4;
    load.then(|| MmioLoad { dest: ins.op0_register(), len: ins.len() as u8 })
}

/// The register update of a load of `value`: (register number, new 64-bit
/// value; 32-bit destinations zero-extend, SDM Vol. 1 3.4.1.1).
pub fn load_result(gpr: &[u64; 16], dest: Register, value: u32) -> Option<(u8, u64)> {
    write_reg(gpr, dest, u64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcpu::ptwrite::{emulate, Emulated};

    #[test]
    fn loads() {
        // mov eax, [rdx+0x300]
        assert_eq!(decode_load(&[0x8b, 0x82, 0x00, 0x03, 0, 0], 64), Some(MmioLoad { dest: Register::EAX, len: 6 }));
        // mov r9d, [rax]; the load zero-extends.
        let l = decode_load(&[0x44, 0x8b, 0x08], 64).unwrap();
        let mut gpr = [0u64; 16];
        gpr[9] = u64::MAX;
        assert_eq!(load_result(&gpr, l.dest, 7), Some((9, 7)));
        // 32-bit code: mov eax, [0xfee00020]
        assert!(decode_load(&[0xa1, 0x20, 0x00, 0xe0, 0xfe], 32).is_some());
        assert_eq!(decode_load(&[0x48, 0x8b, 0x02], 64), None, "64-bit load");
        assert_eq!(decode_load(&[0x89, 0x0a], 64), None, "a store");
    }

    #[test]
    fn stores_go_through_the_page_table_store_emulator() {
        // or dword [rax+0xf0], 0x1ff (a volatile read-modify-write folded
        // into one instruction) on SVR = 0xff.
        let e = emulate(&[0x81, 0x88, 0xf0, 0, 0, 0, 0xff, 0x01, 0, 0], 64, &[0; 16], 0xf0, |_| Some(0xff));
        let Emulated::Store(s) = e else { panic!("{e:?}") };
        assert_eq!((s.width, s.value, s.len), (4, 0x1ff, 10));
    }
}
