//! Architectural facts both kernels need: the exception vectors (SDM Vol. 3A
//! 6.3.1, Table 6-1, "Protected-Mode Exceptions and Interrupts").

/// Mnemonic and description of an architectural exception vector, or `None`
/// for a reserved vector (15, 22-27, 31).
pub const fn exception_name(vector: u8) -> Option<(&'static str, &'static str)> {
    Some(match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug exception"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "BOUND range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("#9", "coprocessor segment overrun (reserved)"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 FPU floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection exception"),
        28 => ("#HV", "hypervisor injection exception"),
        29 => ("#VC", "VMM communication exception"),
        30 => ("#SX", "security exception"),
        _ => return None,
    })
}

/// The mnemonic of `vector`, or `"reserved"`.
pub const fn exception_mnemonic(vector: u8) -> &'static str {
    match exception_name(vector) {
        Some((m, _)) => m,
        None => "reserved",
    }
}

/// Whether delivering hardware exception `vector` pushes an error code:
/// #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX (SDM Vol. 3A 6.13,
/// Table 6-1). VM entry requires "deliver error code" to match this in
/// protected mode (SDM Vol. 3C 27.2.1.3).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_vectors() {
        let with: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
        for v in 0..32u8 {
            assert_eq!(exception_has_error_code(v), with.contains(&v), "vector {v}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(exception_mnemonic(14), "#PF");
        assert_eq!(exception_mnemonic(15), "reserved");
        assert_eq!(exception_name(13).unwrap().1, "general protection");
    }
}
