//! Guest image loader: validates a Multiboot 1 kernel (ELF32, ELF64, or any
//! format described by the a.out kludge) and copies it into guest RAM
//! (guest-physical 0..ram_size), following the Multiboot Specification 0.6.96
//! sections 3.1 (header) and 3.2 (machine state is the caller's job).
//!
//! This module owns parsing ([`parse`] -> [`LoadPlan`]), checking the plan
//! against the VM ([`LoadPlan::validate`]) and the copy through the
//! [`GuestRam`] trait ([`LoadPlan::load`]). It does not build the Multiboot
//! *information* block handed to the guest (that lives in the shared crate).
//!
//! Selection rule (as GRUB and QEMU do it): if the header sets flag bit 16,
//! the a.out kludge addresses describe the image, whatever its format;
//! otherwise the image must be ELF and its PT_LOAD program headers are
//! loaded at their physical addresses (`p_paddr`).

use alloc::vec::Vec;
use core::ops::Range;

mod elf;
mod error;
mod multiboot;
#[cfg(test)]
mod tests;

pub use error::ImageError;
pub use multiboot::{find_header, AoutAddresses, MultibootHeader};

/// Multiboot 1 header magic.
pub const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// The header must lie in the first 8192 bytes of the image.
pub const MULTIBOOT_SEARCH_LIMIT: usize = 8192;
/// Header flag bit 0: align modules on 4 KiB boundaries.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag bit 1: the kernel wants memory information.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag bit 2: the kernel wants a video mode table (not supported).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag bit 16: the address fields (a.out kludge) are valid.
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Required flags (bits 0-15) that Quadrant honours.
pub const SUPPORTED_REQUIRED_FLAGS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO;

/// How the image described its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    AoutKludge,
    Elf32,
    Elf64,
}

/// One contiguous piece of guest-physical memory to fill: `file_len` bytes
/// from the image, then `mem_len - file_len` zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gpa: u64,
    pub file_offset: usize,
    pub file_len: usize,
    pub mem_len: usize,
}

impl Segment {
    /// Guest-physical range covered, including the zeroed tail.
    pub fn gpa_range(&self) -> Range<u64> {
        self.gpa..self.gpa + self.mem_len as u64
    }
}

/// What to copy where, and where to start: the result of [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Non-empty segments, in header order, pairwise disjoint, all below
    /// 4 GiB and inside the image file.
    pub segments: Vec<Segment>,
    /// Guest-physical entry point (EIP in the Multiboot hand-off state).
    pub entry: u32,
    pub kind: ImageKind,
    /// The Multiboot header found (its flags tell whether the kernel wants
    /// memory information).
    pub header: MultibootHeader,
}

/// Guest memory as the loader sees it. Both methods return `false` if the
/// range is not backed by guest RAM.
pub trait GuestRam {
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool;
    fn zero(&mut self, gpa: u64, len: usize) -> bool;
}

/// Finds and checks the Multiboot 1 header, then works out the segments and
/// the entry point (a.out kludge or ELF). Nothing is copied.
pub fn parse(image: &[u8]) -> Result<LoadPlan, ImageError> {
    let header = find_header(image)?;
    let (segments, entry, kind) = match header.aout {
        Some(addrs) => {
            let (segment, entry) = multiboot::aout_plan(image, header.offset, &addrs)?;
            (alloc::vec![segment], entry, ImageKind::AoutKludge)
        }
        None => elf::plan(image)?,
    };
    check_segments(&segments)?;
    Ok(LoadPlan {
        segments,
        entry,
        kind,
        header,
    })
}

/// Checks what every plan must satisfy: at least one segment, all below
/// 4 GiB, none overlapping.
fn check_segments(segments: &[Segment]) -> Result<(), ImageError> {
    if segments.is_empty() {
        return Err(ImageError::NoLoadableSegment);
    }
    for (i, s) in segments.iter().enumerate() {
        if s.gpa.saturating_add(s.mem_len as u64) > 1 << 32 {
            return Err(ImageError::SegmentAbove4GiB {
                segment: i,
                gpa: s.gpa,
                mem_len: s.mem_len as u64,
            });
        }
    }
    for (i, a) in segments.iter().enumerate() {
        for (j, b) in segments.iter().enumerate().skip(i + 1) {
            let (ra, rb) = (a.gpa_range(), b.gpa_range());
            if ra.start < rb.end && rb.start < ra.end {
                return Err(ImageError::Overlap {
                    first: i,
                    first_start: ra.start,
                    first_end: ra.end,
                    second: j,
                    second_start: rb.start,
                    second_end: rb.end,
                });
            }
        }
    }
    Ok(())
}

impl LoadPlan {
    /// Checks that every byte of every segment lies in guest RAM
    /// (0..ram_size) and outside each `reserved` range.
    pub fn validate(&self, ram_size: u64, reserved: &[Range<u64>]) -> Result<(), ImageError> {
        for (i, s) in self.segments.iter().enumerate() {
            let r = s.gpa_range();
            if r.end > ram_size {
                return Err(ImageError::SegmentOutsideRam {
                    segment: i,
                    start: r.start,
                    end: r.end,
                    ram_size,
                });
            }
            if let Some(res) = reserved
                .iter()
                .find(|res| res.start < r.end && r.start < res.end)
            {
                return Err(ImageError::SegmentInReserved {
                    segment: i,
                    start: r.start,
                    end: r.end,
                    reserved_start: res.start,
                    reserved_end: res.end,
                });
            }
        }
        Ok(())
    }

    /// Copies each segment's file bytes to its guest-physical address and
    /// zeroes the rest of it (bss). `image` must be the slice given to
    /// [`parse`]; call [`LoadPlan::validate`] first.
    pub fn load(&self, image: &[u8], ram: &mut impl GuestRam) -> Result<(), ImageError> {
        for (i, s) in self.segments.iter().enumerate() {
            let bytes = s
                .file_offset
                .checked_add(s.file_len)
                .and_then(|end| image.get(s.file_offset..end))
                .ok_or(ImageError::Truncated {
                    what: "segment data",
                    offset: s.file_offset as u64,
                    needed: s.file_len as u64,
                    image_len: image.len(),
                })?;
            if !bytes.is_empty() && !ram.write(s.gpa, bytes) {
                return Err(ImageError::RamWriteFailed {
                    segment: i,
                    gpa: s.gpa,
                    len: s.file_len as u64,
                });
            }
            let bss = s.mem_len - s.file_len;
            let bss_gpa = s.gpa + s.file_len as u64;
            if bss > 0 && !ram.zero(bss_gpa, bss) {
                return Err(ImageError::RamWriteFailed {
                    segment: i,
                    gpa: bss_gpa,
                    len: bss as u64,
                });
            }
        }
        Ok(())
    }

    /// Lowest guest-physical address the image occupies.
    pub fn start(&self) -> u64 {
        self.segments.iter().map(|s| s.gpa).min().unwrap_or(0)
    }

    /// First guest-physical address above the whole image (e.g. where the
    /// Multiboot information may go).
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.gpa_range().end)
            .max()
            .unwrap_or(0)
    }
}

/// Little-endian readers that fail instead of panicking.
pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}
