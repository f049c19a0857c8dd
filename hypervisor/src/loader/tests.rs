//! Loader tests: images are built here, byte by byte (flat a.out-kludge
//! binaries, ELF32, ELF64, and a replica of the layout Quadrant's own
//! kernels use), then broken one field at a time.
// `&[a..b]` is a list of one reserved range here, not a mistyped range.
#![allow(clippy::single_range_in_vec_init)]

use alloc::vec;
use alloc::vec::Vec;
use alloc::{format, string::String};

use test_case::test_case;

use super::*;

// ---------------------------------------------------------------------------
// Image builders.

fn put16(v: &mut [u8], off: usize, x: u16) {
    v[off..off + 2].copy_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut [u8], off: usize, x: u32) {
    v[off..off + 4].copy_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut [u8], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_le_bytes());
}

/// A Multiboot 1 header with a correct checksum; `aout` adds the five
/// address fields (header_addr, load_addr, load_end_addr, bss_end_addr,
/// entry_addr) and sets flag bit 16.
fn mb_header(flags: u32, aout: Option<[u32; 5]>) -> Vec<u8> {
    let flags = if aout.is_some() {
        flags | FLAG_AOUT_KLUDGE
    } else {
        flags
    };
    let mut h = Vec::new();
    for x in [
        MULTIBOOT_MAGIC,
        flags,
        0u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(flags)),
    ] {
        h.extend_from_slice(&x.to_le_bytes());
    }
    for x in aout.into_iter().flatten() {
        h.extend_from_slice(&x.to_le_bytes());
    }
    h
}

/// "Code" bytes that are easy to recognise in guest RAM.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

const FLAT_LOAD: u32 = 0x0010_0000;
const FLAT_HDR_OFF: usize = 0x40;
const FLAT_LEN: usize = 0x200;

/// A flat binary loaded at 1 MiB with its header at file offset 0x40, as an
/// a.out-kludge kernel: [header_addr, load_addr, load_end_addr, bss_end_addr,
/// entry_addr].
fn flat_fields() -> [u32; 5] {
    let l = FLAT_LOAD;
    [
        l + FLAT_HDR_OFF as u32,
        l,
        l + FLAT_LEN as u32,
        l + 0x1000,
        l + 0x80,
    ]
}

fn flat_image(fields: [u32; 5]) -> Vec<u8> {
    let mut img = pattern(FLAT_LEN, 1);
    let h = mb_header(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO, Some(fields));
    img[FLAT_HDR_OFF..FLAT_HDR_OFF + h.len()].copy_from_slice(&h);
    img
}

/// One PT_LOAD of a built ELF: physical and virtual address, file bytes,
/// memory size.
struct Seg {
    paddr: u64,
    vaddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

/// Offsets of fields in the ELF images built by [`elf`].
const PH64: usize = 64;
const PH64_LEN: usize = 56;

/// An x86 ELF executable (ELF64 if `is64`) with the program headers right
/// after the ELF header and the segment data after them, 16-byte aligned.
fn elf(is64: bool, segs: &[Seg], entry: u64) -> Vec<u8> {
    let (ehdr, phlen) = if is64 { (64, PH64_LEN) } else { (52, 32) };
    let mut offsets = Vec::new();
    let mut off = (ehdr + segs.len() * phlen + 15) & !15;
    for s in segs {
        offsets.push(off);
        off = (off + s.data.len() + 15) & !15;
    }
    let mut img = vec![0u8; off];
    img[..4].copy_from_slice(b"\x7fELF");
    img[4] = if is64 { 2 } else { 1 };
    img[5] = 1;
    img[6] = 1;
    put16(&mut img, 16, 2);
    put16(&mut img, 18, if is64 { 62 } else { 3 });
    put32(&mut img, 20, 1);
    if is64 {
        put64(&mut img, 24, entry);
        put64(&mut img, 32, ehdr as u64);
        put16(&mut img, 52, ehdr as u16);
        put16(&mut img, 54, phlen as u16);
        put16(&mut img, 56, segs.len() as u16);
    } else {
        put32(&mut img, 24, entry as u32);
        put32(&mut img, 28, ehdr as u32);
        put16(&mut img, 40, ehdr as u16);
        put16(&mut img, 42, phlen as u16);
        put16(&mut img, 44, segs.len() as u16);
    }
    for (i, (s, &o)) in segs.iter().zip(&offsets).enumerate() {
        let p = ehdr + i * phlen;
        put32(&mut img, p, 1); // PT_LOAD
        if is64 {
            put32(&mut img, p + 4, 7);
            put64(&mut img, p + 8, o as u64);
            put64(&mut img, p + 16, s.vaddr);
            put64(&mut img, p + 24, s.paddr);
            put64(&mut img, p + 32, s.data.len() as u64);
            put64(&mut img, p + 40, s.memsz);
            put64(&mut img, p + 48, 0x1000);
        } else {
            put32(&mut img, p + 4, o as u32);
            put32(&mut img, p + 8, s.vaddr as u32);
            put32(&mut img, p + 12, s.paddr as u32);
            put32(&mut img, p + 16, s.data.len() as u32);
            put32(&mut img, p + 20, s.memsz as u32);
            put32(&mut img, p + 24, 7);
            put32(&mut img, p + 28, 0x1000);
        }
        img[o..o + s.data.len()].copy_from_slice(&s.data);
    }
    img
}

/// Text segment data starting with a Multiboot header without the kludge.
fn text_with_header(len: usize) -> Vec<u8> {
    let mut t = pattern(len, 3);
    let h = mb_header(FLAG_MEMORY_INFO, None);
    t[..h.len()].copy_from_slice(&h);
    t
}

/// ELF64 with two PT_LOADs: text at 1 MiB, data + bss at 2 MiB.
fn elf64_two() -> Vec<u8> {
    elf(
        true,
        &[
            Seg {
                paddr: 0x10_0000,
                vaddr: 0x10_0000,
                data: text_with_header(0x200),
                memsz: 0x200,
            },
            Seg {
                paddr: 0x20_0000,
                vaddr: 0x20_0000,
                data: pattern(0x100, 9),
                memsz: 0x3000,
            },
        ],
        0x10_0010,
    )
}

fn elf32_one() -> Vec<u8> {
    elf(
        false,
        &[Seg {
            paddr: 0x10_0000,
            vaddr: 0x10_0000,
            data: text_with_header(0x180),
            memsz: 0x1180,
        }],
        0x10_0020,
    )
}

/// A replica of the layout of Quadrant's own kernels (bare-rt/linker.ld and
/// bare-rt/src/boot.rs): ELF64, one PT_LOAD at 1 MiB at file offset 0x1000,
/// the Multiboot header first in .text with the a.out kludge (header_addr =
/// load_addr = 1 MiB, load_end_addr, bss_end_addr, entry `_start32`).
fn quadrant_like_kernel() -> Vec<u8> {
    let text_len = 0x800usize;
    let load = 0x10_0000u32;
    let fields = [
        load,
        load,
        load + text_len as u32,
        load + text_len as u32 + 0x2000,
        load + 0x20,
    ];
    let mut text = pattern(text_len, 5);
    let h = mb_header(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO, Some(fields));
    text[..h.len()].copy_from_slice(&h);
    let mut img = elf(
        true,
        &[Seg {
            paddr: load.into(),
            vaddr: load.into(),
            data: text,
            memsz: text_len as u64 + 0x2000,
        }],
        u64::from(load) + 0x20,
    );
    // Move the segment data to file offset 0x1000 like a page-aligned link.
    let data_off = (PH64 + PH64_LEN + 15) & !15;
    let data = img[data_off..].to_vec();
    img.truncate(data_off);
    img.resize(0x1000, 0);
    img.extend_from_slice(&data);
    put64(&mut img, PH64 + 8, 0x1000);
    img.extend_from_slice(&[0x55; 0x300]); // .symtab/.strtab stand-in
    img
}

/// Guest RAM backed by a Vec, pre-filled with 0xAA so that zeroing shows.
struct FakeRam {
    bytes: Vec<u8>,
}

impl FakeRam {
    fn new(size: usize) -> Self {
        FakeRam {
            bytes: vec![0xAA; size],
        }
    }
    fn range(&mut self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(gpa).ok()?;
        self.bytes.get_mut(start..start.checked_add(len)?)
    }
}

impl GuestRam for FakeRam {
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        self.range(gpa, bytes.len())
            .map(|r| r.copy_from_slice(bytes))
            .is_some()
    }
    fn zero(&mut self, gpa: u64, len: usize) -> bool {
        self.range(gpa, len).map(|r| r.fill(0)).is_some()
    }
}

// ---------------------------------------------------------------------------
// Good images.

#[test]
fn aout_flat_image() {
    let img = flat_image(flat_fields());
    let plan = parse(&img).unwrap();
    assert_eq!(plan.kind, ImageKind::AoutKludge);
    assert_eq!(plan.entry, 0x10_0080);
    assert_eq!(
        plan.segments,
        [Segment {
            gpa: 0x10_0000,
            file_offset: 0,
            file_len: 0x200,
            mem_len: 0x1000
        }]
    );
    assert_eq!(plan.header.offset, FLAT_HDR_OFF);
    assert_eq!(plan.header.flags, 0x1_0003);
    assert_eq!((plan.start(), plan.end()), (0x10_0000, 0x10_1000));

    let mut ram = FakeRam::new(0x20_0000);
    plan.validate(0x20_0000, &[0x9000..0xA000]).unwrap();
    plan.load(&img, &mut ram).unwrap();
    assert_eq!(&ram.bytes[0x10_0000..0x10_0200], &img[..]);
    assert!(
        ram.bytes[0x10_0200..0x10_1000].iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(ram.bytes[0x10_1000], 0xAA, "nothing written past bss_end");
    assert_eq!(
        ram.bytes[0x0F_FFFF], 0xAA,
        "nothing written below load_addr"
    );
}

#[test]
fn aout_load_end_zero_means_end_of_file_and_bss_end_zero_means_none() {
    let mut f = flat_fields();
    // Text starts 0x20 bytes into the file.
    f[1] = f[0] - (FLAT_HDR_OFF as u32 - 0x20);
    f[2] = 0;
    f[3] = 0;
    let plan = parse(&flat_image(f)).unwrap();
    assert_eq!(
        plan.segments,
        [Segment {
            gpa: u64::from(f[1]),
            file_offset: 0x20,
            file_len: FLAT_LEN - 0x20,
            mem_len: FLAT_LEN - 0x20
        }]
    );
}

#[test]
fn elf64_with_two_segments() {
    let img = elf64_two();
    let plan = parse(&img).unwrap();
    assert_eq!(plan.kind, ImageKind::Elf64);
    assert_eq!(plan.entry, 0x10_0010);
    assert_eq!(plan.segments.len(), 2);
    assert_eq!(
        (
            plan.segments[1].gpa,
            plan.segments[1].file_len,
            plan.segments[1].mem_len
        ),
        (0x20_0000, 0x100, 0x3000)
    );
    assert!(plan.header.aout.is_none());

    let mut ram = FakeRam::new(0x40_0000);
    plan.validate(0x40_0000, &[]).unwrap();
    plan.load(&img, &mut ram).unwrap();
    let s0 = plan.segments[0];
    assert_eq!(
        &ram.bytes[0x10_0000..0x10_0200],
        &img[s0.file_offset..s0.file_offset + 0x200]
    );
    assert_eq!(&ram.bytes[0x20_0000..0x20_0100], &pattern(0x100, 9)[..]);
    assert!(ram.bytes[0x20_0100..0x20_3000].iter().all(|&b| b == 0));
    assert_eq!(ram.bytes[0x20_3000], 0xAA);
}

#[test]
fn elf32_with_bss() {
    let plan = parse(&elf32_one()).unwrap();
    assert_eq!(plan.kind, ImageKind::Elf32);
    assert_eq!(plan.entry, 0x10_0020);
    assert_eq!(
        (plan.segments[0].file_len, plan.segments[0].mem_len),
        (0x180, 0x1180)
    );
}

#[test]
fn higher_half_elf64_entry_is_translated_to_physical() {
    let base = 0xFFFF_FFFF_8010_0000u64;
    let img = elf(
        true,
        &[Seg {
            paddr: 0x10_0000,
            vaddr: base,
            data: text_with_header(0x100),
            memsz: 0x100,
        }],
        base + 0x40,
    );
    assert_eq!(parse(&img).unwrap().entry, 0x10_0040);
}

#[test]
fn quadrant_kernel_layout_uses_the_kludge() {
    let img = quadrant_like_kernel();
    let plan = parse(&img).unwrap();
    assert_eq!(plan.kind, ImageKind::AoutKludge);
    assert_eq!(plan.header.offset, 0x1000);
    assert_eq!(plan.entry, 0x10_0020);
    assert_eq!(
        plan.segments,
        [Segment {
            gpa: 0x10_0000,
            file_offset: 0x1000,
            file_len: 0x800,
            mem_len: 0x2800
        }]
    );
    // The ELF view of the same file agrees.
    let (segs, entry, kind) = elf::plan(&img).unwrap();
    assert_eq!(
        (segs[0].gpa, segs[0].file_offset, entry, kind),
        (0x10_0000, 0x1000, 0x10_0020, ImageKind::Elf64)
    );
}

/// The real guest kernel, when a previous build left it here.
#[test]
fn real_guest_kernel_if_built() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target-guest-test/quadrant-guest"
    );
    if let Ok(img) = std::fs::read(path) {
        let plan = parse(&img).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(plan.entry >= 0x10_0000);
        plan.validate(64 << 20, &[]).unwrap();
    }
}

#[test]
fn optional_flag_bits_are_ignored() {
    let mut img = elf32_one();
    let off = (52 + 32 + 15) & !15;
    let h = mb_header(FLAG_MEMORY_INFO | 1 << 20 | 1 << 31, None);
    img[off..off + 12].copy_from_slice(&h);
    assert!(parse(&img).is_ok());
}

#[test]
fn first_good_header_wins_over_an_earlier_bad_one() {
    let mut img = flat_image(flat_fields());
    put32(&mut img, 0x10, MULTIBOOT_MAGIC);
    put32(&mut img, 0x14, 0);
    put32(&mut img, 0x18, 1);
    assert_eq!(parse(&img).unwrap().header.offset, FLAT_HDR_OFF);
}

// ---------------------------------------------------------------------------
// Malformed images.

fn elf64_broken(mutate: fn(&mut Vec<u8>)) -> ImageError {
    let mut img = elf64_two();
    mutate(&mut img);
    parse(&img).unwrap_err()
}

const PH1: usize = PH64 + PH64_LEN;

#[test_case(|i| i[0] = 0 => matches ImageError::NotElf { first_bytes: [0, b'E', b'L', b'F'] } ; "elf magic")]
#[test_case(|i| i[4] = 3 => matches ImageError::UnsupportedElf { field: "EI_CLASS", value: 3, .. } ; "class")]
#[test_case(|i| i[5] = 2 => matches ImageError::UnsupportedElf { field: "EI_DATA", value: 2, .. } ; "big endian")]
#[test_case(|i| put16(i, 16, 3) => matches ImageError::UnsupportedElf { field: "e_type", value: 3, .. } ; "shared object")]
#[test_case(|i| put16(i, 18, 3) => matches ImageError::UnsupportedElf { field: "e_machine", value: 3, .. } ; "elf64 with em_386")]
#[test_case(|i| put16(i, 54, 40) => matches ImageError::UnsupportedElf { field: "e_phentsize", value: 40, .. } ; "phentsize")]
#[test_case(|i| put16(i, 56, 0xffff) => matches ImageError::UnsupportedElf { field: "e_phnum", .. } ; "pn_xnum")]
#[test_case(|i| put64(i, 32, 0x10_0000) => matches ImageError::Truncated { what: "ELF program header table", .. } ; "phoff")]
#[test_case(|i| put64(i, 32, u64::MAX - 8) => matches ImageError::Truncated { what: "ELF program header table", .. } ; "phoff overflow")]
#[test_case(|i| put64(i, PH64 + 32, 0x201) => matches ImageError::SegmentMemszBelowFilesz { phdr: 0, filesz: 0x201, memsz: 0x200 } ; "filesz above memsz")]
#[test_case(|i| put64(i, PH1 + 8, 0x10_0000) => matches ImageError::SegmentOutOfFile { phdr: 1, offset: 0x10_0000, .. } ; "offset past eof")]
#[test_case(|i| put64(i, PH1 + 32, 0x2000) => matches ImageError::SegmentOutOfFile { phdr: 1, filesz: 0x2000, .. } ; "filesz past eof")]
#[test_case(|i| put64(i, PH1 + 8, u64::MAX) => matches ImageError::SegmentOutOfFile { phdr: 1, .. } ; "offset overflow")]
#[test_case(|i| put64(i, PH1 + 24, 0xFFFF_F000) => matches ImageError::SegmentAbove4GiB { segment: 1, gpa: 0xFFFF_F000, mem_len: 0x3000 } ; "above 4g")]
#[test_case(|i| put64(i, PH1 + 24, u64::MAX) => matches ImageError::SegmentAbove4GiB { segment: 1, .. } ; "paddr overflow")]
#[test_case(|i| put64(i, PH1 + 24, 0x10_0100) => matches ImageError::Overlap { first: 0, second: 1, first_start: 0x10_0000, first_end: 0x10_0200, second_start: 0x10_0100, second_end: 0x10_3100 } ; "overlap")]
#[test_case(|i| put64(i, 24, 0x30_0000) => matches ImageError::EntryOutsideImage { entry: 0x30_0000, .. } ; "entry outside")]
#[test_case(|i| put64(i, 24, 0x1_0010_0010) => matches ImageError::EntryOutsideImage { .. } ; "entry above 4g")]
#[test_case(|i| { put32(i, PH64, 6); put32(i, PH1, 4) } => matches ImageError::NoLoadableSegment ; "no pt_load")]
#[test_case(|i| { put64(i, PH64 + 40, 0); put64(i, PH64 + 32, 0); put64(i, PH1 + 40, 0); put64(i, PH1 + 32, 0) } => matches ImageError::NoLoadableSegment ; "only empty pt_load")]
fn malformed_elf(mutate: fn(&mut Vec<u8>)) -> ImageError {
    elf64_broken(mutate)
}

#[test]
fn elf32_wrong_machine() {
    let mut img = elf32_one();
    put16(&mut img, 18, 62);
    assert!(matches!(
        parse(&img),
        Err(ImageError::UnsupportedElf {
            field: "e_machine",
            value: 62,
            ..
        })
    ));
}

#[test]
fn elf_header_cut_short() {
    // ELF magic, class 64, then the Multiboot header at offset 8: 20 bytes.
    let mut img = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    img.extend_from_slice(&mb_header(0, None));
    assert_eq!(
        parse(&img),
        Err(ImageError::Truncated {
            what: "ELF header",
            offset: 0,
            needed: 64,
            image_len: 20
        })
    );
}

fn header_at(len: usize, offset: usize, header: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; len];
    img[offset..offset + header.len()].copy_from_slice(header);
    img
}

#[test_case(vec![0u8; 100] => matches ImageError::NotMultiboot { image_len: 100 } ; "no magic")]
#[test_case(vec![] => matches ImageError::NotMultiboot { image_len: 0 } ; "empty")]
#[test_case(header_at(0x3000, 8192, &mb_header(0, None)) => matches ImageError::NotMultiboot { .. } ; "beyond 8192")]
#[test_case(header_at(0x100, 0x22, &mb_header(0, None)) => matches ImageError::NotMultiboot { .. } ; "unaligned")]
#[test_case(header_at(0x100, 0x20, &[0x02, 0xb0, 0xad, 0x1b, 0, 0, 0, 0, 0, 0, 0, 0]) => matches ImageError::BadChecksum { offset: 0x20, flags: 0, checksum: 0 } ; "bad checksum")]
#[test_case(header_at(0x24, 0x20, &[0x02, 0xb0, 0xad, 0x1b]) => matches ImageError::Truncated { what: "Multiboot header", offset: 0x20, needed: 12, image_len: 0x24 } ; "header cut")]
#[test_case(header_at(0x40, 0x30, &mb_header(0, Some([0; 5]))[..16]) => matches ImageError::Truncated { what: "Multiboot header with a.out kludge fields", .. } ; "kludge fields cut")]
#[test_case(header_at(0x100, 0, &mb_header(FLAG_VIDEO_MODE | FLAG_MEMORY_INFO, None)) => matches ImageError::UnsupportedRequiredFlag { bit: 2 } ; "video mode")]
#[test_case(header_at(0x100, 0, &mb_header(1 << 9, None)) => matches ImageError::UnsupportedRequiredFlag { bit: 9 } ; "unknown required")]
#[test_case(header_at(0x100, 0, &mb_header(FLAG_MEMORY_INFO, None)) => matches ImageError::NotElf { first_bytes: [0x02, 0xb0, 0xad, 0x1b] } ; "not elf")]
fn malformed_header(img: Vec<u8>) -> ImageError {
    parse(&img).unwrap_err()
}

fn aout_with(edit: fn(&mut [u32; 5])) -> ImageError {
    let mut f = flat_fields();
    edit(&mut f);
    parse(&flat_image(f)).unwrap_err()
}

#[test_case(|f| f[1] = f[0] + 4 => matches ImageError::AoutLoadAfterHeader { load_addr: 0x10_0044, header_addr: 0x10_0040 } ; "load after header")]
#[test_case(|f| f[1] = f[0] - 0x44 => matches ImageError::AoutLoadBeforeFileStart { header_offset: 0x40, .. } ; "text before file")]
#[test_case(|f| f[2] = f[1] - 1 => matches ImageError::AoutLoadEndBeforeLoad { .. } ; "load end below load")]
#[test_case(|f| f[2] = f[1] + 0x201 => matches ImageError::AoutLoadEndBeyondFile { needed_end: 0x201, image_len: 0x200, .. } ; "load end beyond file")]
#[test_case(|f| f[3] = f[2] - 1 => matches ImageError::AoutBssEndBeforeLoadEnd { load_end_addr: 0x10_0200, bss_end_addr: 0x10_01ff } ; "bss end below load end")]
#[test_case(|f| f[4] = f[1] - 1 => matches ImageError::EntryOutsideImage { entry: 0xF_FFFF, .. } ; "entry below")]
#[test_case(|f| f[4] = f[2] => matches ImageError::EntryOutsideImage { entry: 0x10_0200, .. } ; "entry at load end")]
#[test_case(|f| { f[0] = 0xFFFF_FF40; f[1] = 0xFFFF_FF00; f[2] = 0; f[3] = 0; f[4] = 0xFFFF_FF80 } => matches ImageError::SegmentAbove4GiB { segment: 0, gpa: 0xFFFF_FF00, mem_len: 0x200 } ; "to eof above 4g")]
fn malformed_aout(edit: fn(&mut [u32; 5])) -> ImageError {
    aout_with(edit)
}

// ---------------------------------------------------------------------------
// Plan validation and loading.

#[test_case(0x20_1000, &[] => Ok(()) ; "fits")]
#[test_case(0x10_0800, &[] => Err(ImageError::SegmentOutsideRam { segment: 0, start: 0x10_0000, end: 0x10_1000, ram_size: 0x10_0800 }) ; "ram too small")]
#[test_case(0x20_0000, &[0x10_0f00..0x10_2000] => Err(ImageError::SegmentInReserved { segment: 0, start: 0x10_0000, end: 0x10_1000, reserved_start: 0x10_0f00, reserved_end: 0x10_2000 }) ; "bss over reserved")]
#[test_case(0x20_0000, &[0x9000..0x10_0000, 0x10_1000..0x10_2000] => Ok(()) ; "adjacent reserved")]
#[test_case(0x20_0000, &[0x10_0000..0x10_0000] => Ok(()) ; "empty reserved")]
fn validate_flat(ram_size: u64, reserved: &[Range<u64>]) -> Result<(), ImageError> {
    parse(&flat_image(flat_fields()))
        .unwrap()
        .validate(ram_size, reserved)
}

#[test]
fn validate_names_the_second_segment() {
    let plan = parse(&elf64_two()).unwrap();
    assert_eq!(
        plan.validate(0x20_2000, &[]),
        Err(ImageError::SegmentOutsideRam {
            segment: 1,
            start: 0x20_0000,
            end: 0x20_3000,
            ram_size: 0x20_2000
        })
    );
}

#[test]
fn load_reports_a_refusing_ram() {
    let img = elf64_two();
    let plan = parse(&img).unwrap();
    // Big enough for the text, not for the data segment.
    let mut ram = FakeRam::new(0x10_1000);
    assert_eq!(
        plan.load(&img, &mut ram),
        Err(ImageError::RamWriteFailed {
            segment: 1,
            gpa: 0x20_0000,
            len: 0x100
        })
    );
    // Data fits but the bss does not.
    let mut ram = FakeRam::new(0x20_1000);
    assert_eq!(
        plan.load(&img, &mut ram),
        Err(ImageError::RamWriteFailed {
            segment: 1,
            gpa: 0x20_0100,
            len: 0x2f00
        })
    );
}

#[test]
fn load_checks_the_image_again() {
    let img = elf64_two();
    let plan = parse(&img).unwrap();
    let mut ram = FakeRam::new(0x40_0000);
    assert!(matches!(
        plan.load(&img[..0x100], &mut ram),
        Err(ImageError::Truncated {
            what: "segment data",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Messages.

fn text(e: ImageError) -> String {
    format!("{e}")
}

#[test]
fn error_texts() {
    assert_eq!(
        text(ImageError::NotMultiboot { image_len: 9000 }),
        "no Multiboot 1 header (magic 0x1BADB002) in the first 8192 bytes"
    );
    assert_eq!(
        text(ImageError::NotMultiboot { image_len: 100 }),
        "no Multiboot 1 header (magic 0x1BADB002) in the first 8192 bytes (the image is only 100 bytes long)"
    );
    assert_eq!(
        text(ImageError::BadChecksum {
            offset: 0x20,
            flags: 3,
            checksum: 0
        }),
        "Multiboot header at file offset 0x20: bad checksum 0x00000000: magic 0x1badb002 + flags \
         0x00000003 + checksum = 0x1badb005, must be 0 (checksum should be 0xe4524ffb)"
    );
    assert_eq!(
        text(ImageError::UnsupportedRequiredFlag { bit: 2 }),
        "Multiboot header flag bit 2 (video mode table) is required by the kernel but not supported \
         (supported required flags: bit 0 page-align modules, bit 1 memory information)"
    );
    assert_eq!(
        text(aout_with(|f| f[2] = f[1] + 0x201)),
        "a.out kludge: load_end_addr 0x100201 needs file bytes 0x0..0x201, but the file is only 0x200 bytes long"
    );
    assert_eq!(
        text(elf64_broken(|i| i[0] = b'M')),
        "the Multiboot header has no a.out kludge (flag bit 16 clear), so the image must be ELF, \
         but it starts with 4d 45 4c 46 instead of 7f 45 4c 46 (\"\\x7fELF\")"
    );
    assert_eq!(
        text(elf64_broken(|i| put16(i, 16, 3))),
        "unsupported ELF image: e_type is 0x3, expected 2 (ET_EXEC, an executable)"
    );
    assert_eq!(
        text(elf64_broken(|i| put64(i, 24, 0x30_0000))),
        "entry point ELF e_entry = 0x300000 does not lie inside any loaded segment"
    );
    assert_eq!(
        text(elf64_broken(|i| put64(i, PH1 + 24, 0x10_0100))),
        "segments 0 (guest-physical 0x100000..0x100200) and 1 (0x100100..0x103100) overlap"
    );
    assert_eq!(
        text(ImageError::SegmentInReserved { segment: 0, start: 0x10_0000, end: 0x10_1000, reserved_start: 0x9000, reserved_end: 0x10_0010 }),
        "segment 0 (guest-physical 0x100000..0x101000) overlaps the range 0x9000..0x100010 that the hypervisor reserves"
    );
    assert_eq!(
        text(ImageError::SegmentOutOfFile { phdr: 1, offset: 0x100, filesz: 0x2000, image_len: 0x400 }),
        "ELF program header 1: PT_LOAD file bytes 0x100..0x2100 (p_offset 0x100, p_filesz 0x2000) lie outside the 0x400-byte file"
    );
}
