//! The Multiboot 1 header (Multiboot Specification 0.6.96, 3.1.1-3.1.3):
//! finding it, checking its checksum and required flags, and turning the
//! a.out kludge address fields into a load segment.

use super::{
    read_u32, ImageError, Segment, FLAG_AOUT_KLUDGE, MULTIBOOT_MAGIC, MULTIBOOT_SEARCH_LIMIT,
    SUPPORTED_REQUIRED_FLAGS,
};

/// magic, flags, checksum.
const BASE_LEN: usize = 12;
/// ... plus header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr.
const AOUT_LEN: usize = 32;

/// The a.out kludge address fields (header offsets 12-28), all physical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutAddresses {
    /// Where the header itself is loaded.
    pub header_addr: u32,
    /// Where the text (file offset of the header minus
    /// `header_addr - load_addr`) starts.
    pub load_addr: u32,
    /// End of the bytes loaded from the file; 0: to the end of the file.
    pub load_end_addr: u32,
    /// End of the zeroed bss after the loaded bytes; 0: no bss.
    pub bss_end_addr: u32,
    /// Entry point.
    pub entry_addr: u32,
}

/// A Multiboot 1 header with a good checksum and supported required flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the magic.
    pub offset: usize,
    pub flags: u32,
    /// The address fields, present when flag bit 16 is set.
    pub aout: Option<AoutAddresses>,
}

/// Finds the first 4-byte aligned Multiboot 1 header whose checksum holds in
/// the first 8192 bytes; checks its required flags (bits 0-15) and reads the
/// a.out kludge fields if flag bit 16 is set. If the magic appears only with
/// bad checksums, the first such candidate is reported.
pub fn find_header(image: &[u8]) -> Result<MultibootHeader, ImageError> {
    let limit = image.len().min(MULTIBOOT_SEARCH_LIMIT);
    let mut bad_checksum = None;
    let mut offset = 0;
    while offset + 4 <= limit {
        if read_u32(image, offset) == Some(MULTIBOOT_MAGIC) {
            let (Some(flags), Some(checksum)) =
                (read_u32(image, offset + 4), read_u32(image, offset + 8))
            else {
                return Err(truncated("Multiboot header", offset, BASE_LEN, image.len()));
            };
            if MULTIBOOT_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                return checked_header(image, offset, flags);
            }
            bad_checksum.get_or_insert(ImageError::BadChecksum {
                offset,
                flags,
                checksum,
            });
        }
        offset += 4;
    }
    Err(bad_checksum.unwrap_or(ImageError::NotMultiboot {
        image_len: image.len(),
    }))
}

fn truncated(what: &'static str, offset: usize, needed: usize, image_len: usize) -> ImageError {
    ImageError::Truncated {
        what,
        offset: offset as u64,
        needed: needed as u64,
        image_len,
    }
}

fn checked_header(image: &[u8], offset: usize, flags: u32) -> Result<MultibootHeader, ImageError> {
    let unsupported = flags & 0xFFFF & !SUPPORTED_REQUIRED_FLAGS;
    if unsupported != 0 {
        return Err(ImageError::UnsupportedRequiredFlag {
            bit: unsupported.trailing_zeros() as u8,
        });
    }
    let aout = if flags & FLAG_AOUT_KLUDGE != 0 {
        let field = |i: usize| read_u32(image, offset + BASE_LEN + 4 * i);
        match (field(0), field(1), field(2), field(3), field(4)) {
            (
                Some(header_addr),
                Some(load_addr),
                Some(load_end_addr),
                Some(bss_end_addr),
                Some(entry_addr),
            ) => Some(AoutAddresses {
                header_addr,
                load_addr,
                load_end_addr,
                bss_end_addr,
                entry_addr,
            }),
            _ => {
                return Err(truncated(
                    "Multiboot header with a.out kludge fields",
                    offset,
                    AOUT_LEN,
                    image.len(),
                ))
            }
        }
    } else {
        None
    };
    Ok(MultibootHeader {
        offset,
        flags,
        aout,
    })
}

/// The single segment and the entry point described by the a.out kludge
/// fields of a header at file offset `header_offset`.
pub(super) fn aout_plan(
    image: &[u8],
    header_offset: usize,
    a: &AoutAddresses,
) -> Result<(Segment, u32), ImageError> {
    if a.load_addr > a.header_addr {
        return Err(ImageError::AoutLoadAfterHeader {
            load_addr: a.load_addr,
            header_addr: a.header_addr,
        });
    }
    let text_before_header = (a.header_addr - a.load_addr) as usize;
    let Some(file_offset) = header_offset.checked_sub(text_before_header) else {
        return Err(ImageError::AoutLoadBeforeFileStart {
            header_offset,
            header_addr: a.header_addr,
            load_addr: a.load_addr,
        });
    };
    let available = image.len() - file_offset;
    let file_len = if a.load_end_addr == 0 {
        available
    } else {
        if a.load_end_addr < a.load_addr {
            return Err(ImageError::AoutLoadEndBeforeLoad {
                load_addr: a.load_addr,
                load_end_addr: a.load_end_addr,
            });
        }
        let len = (a.load_end_addr - a.load_addr) as usize;
        if len > available {
            return Err(ImageError::AoutLoadEndBeyondFile {
                load_end_addr: a.load_end_addr,
                file_offset,
                needed_end: (file_offset + len) as u64,
                image_len: image.len(),
            });
        }
        len
    };
    let load_end = u64::from(a.load_addr) + file_len as u64;
    let mem_len = if a.bss_end_addr == 0 {
        file_len
    } else if u64::from(a.bss_end_addr) < load_end {
        return Err(ImageError::AoutBssEndBeforeLoadEnd {
            load_end_addr: load_end,
            bss_end_addr: a.bss_end_addr,
        });
    } else {
        (a.bss_end_addr - a.load_addr) as usize
    };
    let segment = Segment {
        gpa: u64::from(a.load_addr),
        file_offset,
        file_len,
        mem_len,
    };
    if !(u64::from(a.load_addr)..load_end).contains(&u64::from(a.entry_addr)) {
        return Err(ImageError::EntryOutsideImage {
            field: "a.out kludge entry_addr",
            entry: u64::from(a.entry_addr),
        });
    }
    Ok((segment, a.entry_addr))
}
