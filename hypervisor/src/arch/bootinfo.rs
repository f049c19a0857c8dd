//! The boot loader's hand-over as one [`BootInfo`], whichever protocol
//! started the hypervisor: Multiboot 1 (GRUB's `multiboot` under BIOS,
//! QEMU's `-kernel`; parsed by `shared::multiboot`) or Multiboot 2 (GRUB's
//! `multiboot2`, the UEFI path, which needs no legacy BIOS structures;
//! parsed by the `multiboot2` crate). EAX at entry tells them apart.
//!
//! Everything the hypervisor uses later is copied out here: the command
//! line, the memory map, the modules with their strings, the display, and
//! the ACPI RSDP. The RSDP is the one thing left in place: Multiboot 2
//! carries a copy of it inside the boot information (tags 14/15,
//! specification 3.6.16-17), and [`BootInfo::rsdp`] is that copy's physical
//! address, valid as long as [`BootInfo::info_range`] stays reserved.
//! Multiboot 1 has no RSDP (a caller searches the BIOS areas itself).

use core::fmt;
use core::ops::Range;
use multiboot2::{BootInformation, FramebufferType};
use shared::multiboot::{self as mb1, MmapEntry, PhysRead};
use shared::screen::{Channel, Framebuffer, FramebufferKind, PixelFormat};

/// Memory-map entries kept (UEFI maps can be long).
pub const MAX_MMAP: usize = 256;
/// Boot modules kept.
pub const MAX_MODULES: usize = 8;
/// Bytes of a command line (the hypervisor's or a module's).
pub const MAX_CMDLINE: usize = 512;

/// Which protocol started the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot 1 (EAX = 0x2BADB002).
    Multiboot1,
    /// Multiboot 2 (EAX = 0x36D76289).
    Multiboot2,
}

impl Protocol {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Multiboot1 => "Multiboot 1",
            Protocol::Multiboot2 => "Multiboot 2",
        }
    }
}

/// A string copied out of boot-loader memory.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const EMPTY: Self = Text { buf: [0; N], len: 0 };

    fn set(&mut self, s: &str) -> Result<(), BootInfoError> {
        let b = s.as_bytes();
        if b.len() > N {
            return Err(BootInfoError::StringTooLong { len: b.len(), max: N });
        }
        self.buf[..b.len()].copy_from_slice(b);
        self.len = b.len();
        Ok(())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One boot module.
#[derive(Clone, Copy, Debug)]
pub struct BootModule {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    cmdline: Text<MAX_CMDLINE>,
}

impl BootModule {
    /// The module's string (GRUB: the words after the file name).
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_str()
    }
}

/// Why the hand-over cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX held neither Multiboot magic.
    NotMultiboot {
        /// EAX at entry.
        magic: u32,
    },
    /// The Multiboot 1 information block or its memory map is malformed.
    Multiboot1(mb1::InfoError),
    /// The Multiboot 1 module list is malformed.
    Modules(mb1::InfoError),
    /// The Multiboot 2 boot information is malformed.
    Multiboot2(&'static str),
    /// A string is not NUL-terminated UTF-8 within the room kept for it.
    BadString {
        /// Which string.
        what: &'static str,
    },
    /// A string longer than the room kept for it.
    StringTooLong {
        /// Its length.
        len: usize,
        /// The room.
        max: usize,
    },
    /// More memory-map entries or modules than kept.
    TooMany {
        /// What.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl BootInfoError {
    /// Whether the problem is the module list (then the guest image is
    /// what is missing or bad).
    pub fn is_modules(&self) -> bool {
        matches!(
            self,
            BootInfoError::Modules(_)
                | BootInfoError::TooMany { what: "modules", .. }
                | BootInfoError::BadString { what: "module string" }
        )
    }
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::NotMultiboot { magic } => write!(
                f,
                "not started by a Multiboot loader: EAX = {magic:#x}, expected {:#x} (Multiboot 1) or {:#x} (Multiboot 2)",
                mb1::BOOTLOADER_MAGIC,
                multiboot2::MAGIC
            ),
            BootInfoError::Multiboot1(e) => write!(f, "the Multiboot information is unreadable: {e:?}"),
            BootInfoError::Modules(e) => write!(f, "the Multiboot module list is unreadable: {e:?}"),
            BootInfoError::Multiboot2(e) => write!(f, "the Multiboot 2 boot information is unusable: {e}"),
            BootInfoError::BadString { what } => write!(f, "the {what} is not a NUL-terminated UTF-8 string of at most {MAX_CMDLINE} bytes"),
            BootInfoError::StringTooLong { len, max } => write!(f, "a boot string of {len} bytes is longer than {max}"),
            BootInfoError::TooMany { what, max } => write!(f, "more than {max} {what} in the boot information"),
        }
    }
}

/// The hand-over, copied.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// The protocol.
    pub protocol: Protocol,
    cmdline: Text<MAX_CMDLINE>,
    mmap: [MmapEntry; MAX_MMAP],
    mmap_len: usize,
    modules: [BootModule; MAX_MODULES],
    modules_len: usize,
    /// The display the loader describes, if it does.
    pub framebuffer: Option<Framebuffer>,
    /// Physical address of an ACPI RSDP whose signature and checksum are
    /// valid (Multiboot 2 only: the copy in the boot information, the
    /// ACPI 2.0+ one when present); `None` under Multiboot 1.
    pub rsdp: Option<u64>,
    /// Where the loader's structure lies (to keep it out of the allocator
    /// while [`BootInfo::rsdp`] points into it).
    pub info_range: Range<u64>,
}

const NO_MODULE: BootModule = BootModule { start: 0, end: 0, cmdline: Text::EMPTY };

impl BootInfo {
    fn empty(protocol: Protocol, info_range: Range<u64>) -> Self {
        BootInfo {
            protocol,
            cmdline: Text::EMPTY,
            mmap: [MmapEntry { base: 0, len: 0, kind: 0 }; MAX_MMAP],
            mmap_len: 0,
            modules: [NO_MODULE; MAX_MODULES],
            modules_len: 0,
            framebuffer: None,
            rsdp: None,
            info_range,
        }
    }

    /// The hypervisor's command line.
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_str()
    }

    /// The firmware memory map.
    pub fn memory_map(&self) -> &[MmapEntry] {
        &self.mmap[..self.mmap_len]
    }

    /// The boot modules, in the loader's order.
    pub fn modules(&self) -> &[BootModule] {
        &self.modules[..self.modules_len]
    }

    /// Where to draw: the loader's framebuffer, else (Multiboot 1, i.e. a
    /// BIOS boot) the VGA text screen; under Multiboot 2 without a
    /// framebuffer tag, nowhere.
    pub fn display(&self) -> Option<Framebuffer> {
        match (self.framebuffer, self.protocol) {
            (Some(fb), _) => Some(fb),
            (None, Protocol::Multiboot1) => Some(Framebuffer::VGA_TEXT),
            (None, Protocol::Multiboot2) => None,
        }
    }

    fn push_mmap(&mut self, e: MmapEntry) -> Result<(), BootInfoError> {
        let slot = self.mmap.get_mut(self.mmap_len).ok_or(BootInfoError::TooMany { what: "memory-map entries", max: MAX_MMAP })?;
        *slot = e;
        self.mmap_len += 1;
        Ok(())
    }

    fn push_module(&mut self, start: u64, end: u64, cmdline: &str) -> Result<(), BootInfoError> {
        let slot = self.modules.get_mut(self.modules_len).ok_or(BootInfoError::TooMany { what: "modules", max: MAX_MODULES })?;
        slot.start = start;
        slot.end = end;
        slot.cmdline.set(cmdline)?;
        self.modules_len += 1;
        Ok(())
    }

    /// Parses a Multiboot 1 information block at `addr`.
    pub fn from_multiboot1<R: PhysRead + ?Sized>(mem: &R, addr: u64) -> Result<Self, BootInfoError> {
        let info = mb1::parse(mem, addr).map_err(BootInfoError::Multiboot1)?;
        let mut b = BootInfo::empty(Protocol::Multiboot1, addr..addr + mb1::INFO_SIZE as u64);
        let mut buf = [0u8; MAX_CMDLINE];
        if let Some(a) = info.cmdline_addr {
            let s = mb1::read_cstr(mem, a.into(), &mut buf).ok_or(BootInfoError::BadString { what: "command line" })?;
            b.cmdline.set(s)?;
        }
        for e in info.mmap(mem) {
            b.push_mmap(e.map_err(BootInfoError::Multiboot1)?)?;
        }
        for m in info.modules(mem) {
            let m = m.map_err(BootInfoError::Modules)?;
            let s = match m.cmdline_addr {
                0 => "",
                a => mb1::read_cstr(mem, a.into(), &mut buf).ok_or(BootInfoError::BadString { what: "module string" })?,
            };
            b.push_module(m.start.into(), m.end.into(), s)?;
        }
        b.framebuffer = info.framebuffer;
        Ok(b)
    }

    /// Converts Multiboot 2 boot information.
    pub fn from_multiboot2(mbi: &BootInformation<'_>) -> Result<Self, BootInfoError> {
        let range = mbi.start_address() as u64..mbi.end_address() as u64;
        let mut b = BootInfo::empty(Protocol::Multiboot2, range);
        if let Some(c) = mbi.command_line_tag() {
            b.cmdline.set(c.cmdline().map_err(|_| BootInfoError::BadString { what: "command line" })?)?;
        }
        if let Some(map) = mbi.memory_map_tag() {
            for a in map.memory_areas() {
                b.push_mmap(MmapEntry { base: a.start_address(), len: a.size(), kind: a.typ().val() })?;
            }
        }
        for m in mbi.module_tags() {
            let s = m.cmdline().map_err(|_| BootInfoError::BadString { what: "module string" })?;
            if m.end_address() < m.start_address() {
                return Err(BootInfoError::Multiboot2("a module ends before it starts"));
            }
            b.push_module(m.start_address().into(), m.end_address().into(), s)?;
        }
        if let Some(fb) = mbi.framebuffer_tag() {
            let fb = fb.map_err(|_| BootInfoError::Multiboot2("the framebuffer tag has an unknown type"))?;
            let kind = match fb.buffer_type() {
                Ok(FramebufferType::RGB { red, green, blue }) => {
                    let ch = |f: multiboot2::FramebufferField| Channel { pos: f.position, size: f.size };
                    FramebufferKind::Rgb(PixelFormat { red: ch(red), green: ch(green), blue: ch(blue) })
                }
                Ok(FramebufferType::Text) => FramebufferKind::EgaText,
                Ok(FramebufferType::Indexed { .. }) | Err(_) => FramebufferKind::Indexed,
            };
            b.framebuffer =
                Some(Framebuffer { addr: fb.address(), pitch: fb.pitch(), width: fb.width(), height: fb.height(), bpp: fb.bpp(), kind });
        }
        // The tag's RSDP copy follows its 8-byte tag header.
        if let Some(t) = mbi.rsdp_v2_tag().filter(|t| t.checksum_is_valid() && t.signature() == Ok("RSD PTR ")) {
            b.rsdp = Some(core::ptr::from_ref(t) as u64 + 8);
        } else if let Some(t) = mbi.rsdp_v1_tag().filter(|t| t.checksum_is_valid() && t.signature() == Ok("RSD PTR ")) {
            b.rsdp = Some(core::ptr::from_ref(t) as u64 + 8);
        }
        Ok(b)
    }

    /// The hand-over in physical memory, by the magic in EAX.
    pub fn parse(magic: u32, addr: u32) -> Result<Self, BootInfoError> {
        use super::phys::BootMemory;
        match magic {
            mb1::BOOTLOADER_MAGIC => Self::from_multiboot1(&BootMemory, addr.into()),
            multiboot2::MAGIC => Self::from_multiboot2(&BootMemory.multiboot2(addr.into()).map_err(BootInfoError::Multiboot2)?),
            _ => Err(BootInfoError::NotMultiboot { magic }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::phys::multiboot2_from_bytes;
    use shared::multiboot::SliceMem;

    /// Multiboot 2 boot information built by hand, 8-byte aligned.
    #[repr(C, align(8))]
    struct Mbi([u8; 512]);

    fn tag(out: &mut std::vec::Vec<u8>, typ: u32, body: &[u8]) {
        out.extend_from_slice(&typ.to_le_bytes());
        out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn rsdp_v1() -> [u8; 20] {
        let mut r = [0u8; 20];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[9..15].copy_from_slice(b"QUADRA");
        r[16..20].copy_from_slice(&0x7fe_1234u32.to_le_bytes());
        let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        r[8] = 0u8.wrapping_sub(sum);
        r
    }

    fn sample(rsdp: [u8; 20]) -> Mbi {
        let mut v = std::vec![0u8; 8];
        tag(&mut v, 1, b"mmu=shadow log=debug\0");
        let mut mmap = std::vec::Vec::new();
        mmap.extend_from_slice(&24u32.to_le_bytes());
        mmap.extend_from_slice(&0u32.to_le_bytes());
        for (base, len, typ) in [(0u64, 0x9f000u64, 1u32), (0x10_0000, 0x3ff0_0000, 1), (0x4000_0000, 0x1000, 3)] {
            mmap.extend_from_slice(&base.to_le_bytes());
            mmap.extend_from_slice(&len.to_le_bytes());
            mmap.extend_from_slice(&typ.to_le_bytes());
            mmap.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(&mut v, 6, &mmap);
        let mut module = std::vec::Vec::new();
        module.extend_from_slice(&0x20_0000u32.to_le_bytes());
        module.extend_from_slice(&0x24_0000u32.to_le_bytes());
        module.extend_from_slice(b"quadrant-guest expect_hv=1\0");
        tag(&mut v, 3, &module);
        let mut fb = std::vec::Vec::new();
        fb.extend_from_slice(&0x8000_0000u64.to_le_bytes());
        for x in [1280u32 * 4, 1280, 800] {
            fb.extend_from_slice(&x.to_le_bytes());
        }
        fb.extend_from_slice(&[32, 1, 0, 0]);
        fb.extend_from_slice(&[16, 8, 8, 8, 0, 8, 0, 0]);
        tag(&mut v, 8, &fb);
        tag(&mut v, 14, &rsdp);
        tag(&mut v, 0, &[]);
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        let mut m = Mbi([0; 512]);
        m.0[..v.len()].copy_from_slice(&v);
        m
    }

    #[test]
    fn multiboot2_tags_become_boot_info() {
        let m = sample(rsdp_v1());
        let mbi = multiboot2_from_bytes(&m.0).unwrap();
        let b = BootInfo::from_multiboot2(&mbi).unwrap();
        assert_eq!(b.protocol, Protocol::Multiboot2);
        assert_eq!(b.cmdline(), "mmu=shadow log=debug");
        assert_eq!(b.memory_map().len(), 3);
        assert_eq!(b.memory_map()[1], MmapEntry { base: 0x10_0000, len: 0x3ff0_0000, kind: 1 });
        assert_eq!(b.memory_map()[2].kind, 3);
        assert_eq!(b.modules().len(), 1);
        assert_eq!((b.modules()[0].start, b.modules()[0].end), (0x20_0000, 0x24_0000));
        assert_eq!(b.modules()[0].cmdline(), "quadrant-guest expect_hv=1");
        let fb = b.framebuffer.unwrap();
        assert_eq!((fb.addr, fb.pitch, fb.width, fb.height, fb.bpp), (0x8000_0000, 5120, 1280, 800, 32));
        let c = |pos, size| Channel { pos, size };
        assert_eq!(fb.kind, FramebufferKind::Rgb(PixelFormat { red: c(16, 8), green: c(8, 8), blue: c(0, 8) }));
        assert_eq!(b.display(), Some(fb));
        // The RSDP is the copy inside the structure, and it reads back.
        let base = m.0.as_ptr() as u64;
        assert_eq!(b.info_range.start, base);
        let r = b.rsdp.unwrap() - base;
        assert!(b.info_range.contains(&b.rsdp.unwrap()));
        assert_eq!(&m.0[r as usize..r as usize + 8], b"RSD PTR ");
    }

    #[test]
    fn a_bad_rsdp_checksum_gives_no_rsdp() {
        let mut r = rsdp_v1();
        r[8] = r[8].wrapping_add(1);
        let m = sample(r);
        let b = BootInfo::from_multiboot2(&multiboot2_from_bytes(&m.0).unwrap()).unwrap();
        assert_eq!(b.rsdp, None);
    }

    #[test]
    fn malformed_multiboot2_is_refused() {
        let mut m = sample(rsdp_v1());
        // total_size larger than the bytes given.
        m.0[..4].copy_from_slice(&4096u32.to_le_bytes());
        assert!(multiboot2_from_bytes(&m.0).is_err());
        // No end tag: the last tag's size runs off the end.
        let mut m = sample(rsdp_v1());
        let n = u32::from_le_bytes(m.0[..4].try_into().unwrap()) as usize;
        m.0[n - 8] = 7;
        assert!(multiboot2_from_bytes(&m.0).is_err());
        // Misaligned.
        let m = sample(rsdp_v1());
        assert!(multiboot2_from_bytes(&m.0[4..]).is_err());
    }

    #[test]
    fn multiboot1_block_becomes_boot_info() {
        let mut buf = [0u8; 512];
        let map = [MmapEntry { base: 0, len: 0x9fc00, kind: 1 }, MmapEntry { base: 0x10_0000, len: 0x3f0_0000, kind: 1 }];
        let n = mb1::build(&mut buf, 0x9000, 639, 0xfc00, &map, "/boot/quadrant-hv mmu=ept", "GRUB").unwrap();
        let mem = SliceMem { base: 0x9000, bytes: &buf[..n] };
        let b = BootInfo::from_multiboot1(&mem, 0x9000).unwrap();
        assert_eq!(b.protocol, Protocol::Multiboot1);
        assert_eq!(b.cmdline(), "/boot/quadrant-hv mmu=ept");
        assert_eq!(b.memory_map(), &map);
        assert!(b.modules().is_empty());
        assert_eq!(b.rsdp, None);
        assert_eq!(b.framebuffer, None);
        // A BIOS boot without framebuffer information draws in VGA text.
        assert_eq!(b.display(), Some(Framebuffer::VGA_TEXT));
        assert_eq!(
            BootInfo::from_multiboot1(&mem, 0x100).unwrap_err(),
            BootInfoError::Multiboot1(mb1::InfoError::Unreadable { addr: 0x100 })
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = std::format!("{}", BootInfoError::NotMultiboot { magic: 0x1234 });
        assert!(e.contains("0x2badb002") && e.contains("0x36d76289"), "{e}");
        assert!(BootInfoError::Modules(mb1::InfoError::ModuleEndBeforeStart { index: 0 }).is_modules());
        assert!(!BootInfoError::Multiboot2("x").is_modules());
        assert!(BootInfoError::BadString { what: "module string" }.is_modules());
        assert!(!BootInfoError::BadString { what: "command line" }.is_modules());
        let mut t = Text::<4>::EMPTY;
        assert_eq!(t.set("abcde"), Err(BootInfoError::StringTooLong { len: 5, max: 4 }));
    }
}
