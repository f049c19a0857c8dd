//! ELF32/ELF64 executables for x86 (System V ABI gABI, "ELF Header" and
//! "Program Header"): the PT_LOAD program headers become load segments at
//! their physical addresses, as a Multiboot loader does it.

use alloc::vec::Vec;

use super::{read_u16, read_u32, read_u64, ImageError, ImageKind, Segment};

const ELFMAG: [u8; 4] = [0x7F, b'E', b'L', b'F'];
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PN_XNUM: u16 = 0xFFFF;

/// Where the fields of the ELF header and of a program header sit for one
/// ELF class.
struct Layout {
    kind: ImageKind,
    ehdr_len: usize,
    phdr_len: usize,
    machine: u16,
    machine_text: &'static str,
}

const ELF32: Layout = Layout {
    kind: ImageKind::Elf32,
    ehdr_len: 52,
    phdr_len: 32,
    machine: EM_386,
    machine_text: "3 (EM_386) for ELF32",
};
const ELF64: Layout = Layout {
    kind: ImageKind::Elf64,
    ehdr_len: 64,
    phdr_len: 56,
    machine: EM_X86_64,
    machine_text: "62 (EM_X86_64) for ELF64",
};

/// One program header, widened to 64 bits.
struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn truncated(what: &'static str, offset: u64, needed: u64, image_len: usize) -> ImageError {
    ImageError::Truncated {
        what,
        offset,
        needed,
        image_len,
    }
}

fn unsupported(field: &'static str, value: u64, expected: &'static str) -> ImageError {
    ImageError::UnsupportedElf {
        field,
        value,
        expected,
    }
}

/// Segments (program-header order), physical entry point and kind of an ELF
/// image. The entry point is translated like GRUB does: the PT_LOAD whose
/// virtual range holds `e_entry` gives `e_entry - p_vaddr + p_paddr` (equal
/// to `e_entry` for identity-linked kernels).
pub(super) fn plan(image: &[u8]) -> Result<(Vec<Segment>, u32, ImageKind), ImageError> {
    let magic = image.get(..4).unwrap_or(&[]);
    if magic != ELFMAG {
        let mut first_bytes = [0u8; 4];
        first_bytes[..magic.len()].copy_from_slice(magic);
        return Err(ImageError::NotElf { first_bytes });
    }
    let layout = match image.get(4).copied() {
        Some(ELFCLASS32) => ELF32,
        Some(ELFCLASS64) => ELF64,
        other => {
            return Err(unsupported(
                "EI_CLASS",
                other.unwrap_or(0).into(),
                "1 (ELF32) or 2 (ELF64)",
            ))
        }
    };
    let data = image.get(5).copied().unwrap_or(0);
    if data != ELFDATA2LSB {
        return Err(unsupported("EI_DATA", data.into(), "1 (little-endian)"));
    }
    if image.len() < layout.ehdr_len {
        return Err(truncated(
            "ELF header",
            0,
            layout.ehdr_len as u64,
            image.len(),
        ));
    }
    let is64 = layout.kind == ImageKind::Elf64;
    // The header is complete, so these reads cannot fail.
    let u16_at = |off| u64::from(read_u16(image, off).unwrap_or(0));
    let word_at = |off32, off64| -> u64 {
        if is64 {
            read_u64(image, off64).unwrap_or(0)
        } else {
            u64::from(read_u32(image, off32).unwrap_or(0))
        }
    };
    let e_type = u16_at(16);
    if e_type != u64::from(ET_EXEC) {
        return Err(unsupported("e_type", e_type, "2 (ET_EXEC, an executable)"));
    }
    let e_machine = u16_at(18);
    if e_machine != u64::from(layout.machine) {
        return Err(unsupported("e_machine", e_machine, layout.machine_text));
    }
    let e_entry = word_at(24, 24);
    let e_phoff = word_at(28, 32);
    let (phentsize, phnum) = if is64 {
        (u16_at(54), u16_at(56))
    } else {
        (u16_at(42), u16_at(44))
    };
    if phentsize < layout.phdr_len as u64 {
        let expected = if is64 {
            "at least 56 (Elf64_Phdr)"
        } else {
            "at least 32 (Elf32_Phdr)"
        };
        return Err(unsupported("e_phentsize", phentsize, expected));
    }
    if phnum == u64::from(PN_XNUM) {
        return Err(unsupported(
            "e_phnum",
            phnum,
            "below 0xffff (extended numbering is not supported)",
        ));
    }
    let table_len = phentsize * phnum;
    if e_phoff
        .checked_add(table_len)
        .is_none_or(|end| end > image.len() as u64)
    {
        return Err(truncated(
            "ELF program header table",
            e_phoff,
            table_len,
            image.len(),
        ));
    }

    let mut segments = Vec::new();
    let mut entry = None;
    for i in 0..phnum {
        let base = (e_phoff + i * phentsize) as usize;
        let p = read_phdr(image, base, is64);
        if p.p_type != PT_LOAD || p.memsz == 0 {
            continue;
        }
        let phdr = i as usize;
        if p.filesz > p.memsz {
            return Err(ImageError::SegmentMemszBelowFilesz {
                phdr,
                filesz: p.filesz,
                memsz: p.memsz,
            });
        }
        if p.offset
            .checked_add(p.filesz)
            .is_none_or(|end| end > image.len() as u64)
        {
            return Err(ImageError::SegmentOutOfFile {
                phdr,
                offset: p.offset,
                filesz: p.filesz,
                image_len: image.len(),
            });
        }
        if p.paddr.checked_add(p.memsz).is_none_or(|end| end > 1 << 32) {
            return Err(ImageError::SegmentAbove4GiB {
                segment: segments.len(),
                gpa: p.paddr,
                mem_len: p.memsz,
            });
        }
        if entry.is_none() && e_entry >= p.vaddr && e_entry - p.vaddr < p.memsz {
            entry = Some(e_entry - p.vaddr + p.paddr);
        }
        segments.push(Segment {
            gpa: p.paddr,
            file_offset: p.offset as usize,
            file_len: p.filesz as usize,
            mem_len: p.memsz as usize,
        });
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadableSegment);
    }
    // Inside a segment below 4 GiB, so it fits in 32 bits.
    let entry = entry.ok_or(ImageError::EntryOutsideImage {
        field: "ELF e_entry",
        entry: e_entry,
    })?;
    Ok((segments, entry as u32, layout.kind))
}

fn read_phdr(image: &[u8], base: usize, is64: bool) -> Phdr {
    let r32 = |off| read_u32(image, base + off).unwrap_or(0);
    let r64 = |off| read_u64(image, base + off).unwrap_or(0);
    if is64 {
        Phdr {
            p_type: r32(0),
            offset: r64(8),
            vaddr: r64(16),
            paddr: r64(24),
            filesz: r64(32),
            memsz: r64(40),
        }
    } else {
        let w = |off| u64::from(r32(off));
        Phdr {
            p_type: r32(0),
            offset: w(4),
            vaddr: w(8),
            paddr: w(12),
            filesz: w(16),
            memsz: w(20),
        }
    }
}
