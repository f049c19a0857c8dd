//! Why a guest image cannot be loaded: [`ImageError`], one variant per
//! problem, each with a Display text that names the field and the values.

use core::fmt;

use super::{MULTIBOOT_MAGIC, MULTIBOOT_SEARCH_LIMIT};

/// A malformed or unsupported guest image, or a load plan that does not fit
/// the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// No 4-byte aligned magic in the first 8192 bytes (or the whole file if
    /// it is shorter).
    NotMultiboot { image_len: usize },
    /// Magic found, but magic + flags + checksum is not 0 mod 2^32.
    BadChecksum {
        offset: usize,
        flags: u32,
        checksum: u32,
    },
    /// A structure runs past the end of the file.
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        image_len: usize,
    },
    /// A flag in bits 0-15 (must be honoured) that Quadrant does not
    /// implement, e.g. bit 2 (video mode).
    UnsupportedRequiredFlag { bit: u8 },
    /// a.out kludge: load_addr > header_addr.
    AoutLoadAfterHeader { load_addr: u32, header_addr: u32 },
    /// a.out kludge: the text would start before the beginning of the file.
    AoutLoadBeforeFileStart {
        header_offset: usize,
        header_addr: u32,
        load_addr: u32,
    },
    /// a.out kludge: load_end_addr < load_addr.
    AoutLoadEndBeforeLoad { load_addr: u32, load_end_addr: u32 },
    /// a.out kludge: load_end_addr asks for more bytes than the file has.
    AoutLoadEndBeyondFile {
        load_end_addr: u32,
        file_offset: usize,
        needed_end: u64,
        image_len: usize,
    },
    /// a.out kludge: bss_end_addr < load_end_addr.
    AoutBssEndBeforeLoadEnd {
        load_end_addr: u64,
        bss_end_addr: u32,
    },
    /// No a.out kludge and no ELF magic.
    NotElf { first_bytes: [u8; 4] },
    /// An ELF header field with a value Quadrant does not load.
    UnsupportedElf {
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    /// A PT_LOAD segment's file bytes lie (partly) outside the file.
    SegmentOutOfFile {
        phdr: usize,
        offset: u64,
        filesz: u64,
        image_len: usize,
    },
    /// A PT_LOAD segment with p_memsz < p_filesz.
    SegmentMemszBelowFilesz {
        phdr: usize,
        filesz: u64,
        memsz: u64,
    },
    /// A segment ends above 4 GiB (Multiboot loads below 4 GiB).
    SegmentAbove4GiB {
        segment: usize,
        gpa: u64,
        mem_len: u64,
    },
    /// The entry point is not inside a loaded segment.
    EntryOutsideImage { field: &'static str, entry: u64 },
    /// Nothing to load.
    NoLoadableSegment,
    /// Two segments share guest-physical bytes.
    Overlap {
        first: usize,
        first_start: u64,
        first_end: u64,
        second: usize,
        second_start: u64,
        second_end: u64,
    },
    /// A segment extends beyond guest RAM.
    SegmentOutsideRam {
        segment: usize,
        start: u64,
        end: u64,
        ram_size: u64,
    },
    /// A segment covers a range the hypervisor reserved (e.g. for the
    /// Multiboot information block).
    SegmentInReserved {
        segment: usize,
        start: u64,
        end: u64,
        reserved_start: u64,
        reserved_end: u64,
    },
    /// The [`GuestRam`](super::GuestRam) refused a write or zero.
    RamWriteFailed { segment: usize, gpa: u64, len: u64 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match *self {
            NotMultiboot { image_len } => {
                write!(f, "no Multiboot 1 header (magic {MULTIBOOT_MAGIC:#X}) in the first {MULTIBOOT_SEARCH_LIMIT} bytes")?;
                if image_len < MULTIBOOT_SEARCH_LIMIT {
                    write!(f, " (the image is only {image_len} bytes long)")?;
                }
                Ok(())
            }
            BadChecksum { offset, flags, checksum } => write!(
                f,
                "Multiboot header at file offset {offset:#x}: bad checksum {checksum:#010x}: \
                 magic {MULTIBOOT_MAGIC:#010x} + flags {flags:#010x} + checksum = {:#010x}, must be 0 \
                 (checksum should be {:#010x})",
                MULTIBOOT_MAGIC.wrapping_add(flags).wrapping_add(checksum),
                0u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(flags))
            ),
            Truncated { what, offset, needed, image_len } => write!(
                f,
                "image truncated: the {what} at file offset {offset:#x} needs {needed} bytes, \
                 but the file ends at {image_len:#x}"
            ),
            UnsupportedRequiredFlag { bit } => write!(
                f,
                "Multiboot header flag bit {bit} ({}) is required by the kernel but not supported \
                 (supported required flags: bit 0 page-align modules, bit 1 memory information)",
                match bit {
                    2 => "video mode table",
                    _ => "unknown required feature",
                }
            ),
            AoutLoadAfterHeader { load_addr, header_addr } => write!(
                f,
                "a.out kludge: load_addr {load_addr:#x} is above header_addr {header_addr:#x}; \
                 the header must lie inside the loaded text"
            ),
            AoutLoadBeforeFileStart { header_offset, header_addr, load_addr } => write!(
                f,
                "a.out kludge: load_addr {load_addr:#x} is {:#x} bytes below header_addr \
                 {header_addr:#x}, but the header is only at file offset {header_offset:#x}: \
                 the text would start before the file",
                header_addr - load_addr
            ),
            AoutLoadEndBeforeLoad { load_addr, load_end_addr } => write!(
                f,
                "a.out kludge: load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}"
            ),
            AoutLoadEndBeyondFile { load_end_addr, file_offset, needed_end, image_len } => write!(
                f,
                "a.out kludge: load_end_addr {load_end_addr:#x} needs file bytes {file_offset:#x}..{needed_end:#x}, \
                 but the file is only {image_len:#x} bytes long"
            ),
            AoutBssEndBeforeLoadEnd { load_end_addr, bss_end_addr } => write!(
                f,
                "a.out kludge: bss_end_addr {bss_end_addr:#x} is below the end of the loaded text \
                 {load_end_addr:#x}"
            ),
            NotElf { first_bytes: b } => write!(
                f,
                "the Multiboot header has no a.out kludge (flag bit 16 clear), so the image must be \
                 ELF, but it starts with {:02x} {:02x} {:02x} {:02x} instead of 7f 45 4c 46 (\"\\x7fELF\")",
                b[0], b[1], b[2], b[3]
            ),
            UnsupportedElf { field, value, expected } => {
                write!(f, "unsupported ELF image: {field} is {value:#x}, expected {expected}")
            }
            SegmentOutOfFile { phdr, offset, filesz, image_len } => write!(
                f,
                "ELF program header {phdr}: PT_LOAD file bytes {offset:#x}..{:#x} (p_offset {offset:#x}, \
                 p_filesz {filesz:#x}) lie outside the {image_len:#x}-byte file",
                offset.saturating_add(filesz)
            ),
            SegmentMemszBelowFilesz { phdr, filesz, memsz } => write!(
                f,
                "ELF program header {phdr}: p_memsz {memsz:#x} is smaller than p_filesz {filesz:#x}"
            ),
            SegmentAbove4GiB { segment, gpa, mem_len } => write!(
                f,
                "segment {segment} at guest-physical {gpa:#x} with {mem_len:#x} bytes ends above 4 GiB; \
                 a Multiboot 1 kernel must load below 4 GiB"
            ),
            EntryOutsideImage { field, entry } => {
                write!(f, "entry point {field} = {entry:#x} does not lie inside any loaded segment")
            }
            NoLoadableSegment => f.write_str("the image has no loadable segment (no PT_LOAD with p_memsz > 0)"),
            Overlap { first, first_start, first_end, second, second_start, second_end } => write!(
                f,
                "segments {first} (guest-physical {first_start:#x}..{first_end:#x}) and {second} \
                 ({second_start:#x}..{second_end:#x}) overlap"
            ),
            SegmentOutsideRam { segment, start, end, ram_size } => write!(
                f,
                "segment {segment} (guest-physical {start:#x}..{end:#x}) does not fit in guest RAM \
                 0x0..{ram_size:#x}"
            ),
            SegmentInReserved { segment, start, end, reserved_start, reserved_end } => write!(
                f,
                "segment {segment} (guest-physical {start:#x}..{end:#x}) overlaps the range \
                 {reserved_start:#x}..{reserved_end:#x} that the hypervisor reserves"
            ),
            RamWriteFailed { segment, gpa, len } => write!(
                f,
                "segment {segment}: guest RAM refused {len:#x} bytes at guest-physical {gpa:#x}"
            ),
        }
    }
}
