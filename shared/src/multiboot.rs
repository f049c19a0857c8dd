//! Multiboot 1 information blocks, parsed and built.
//!
//! A Multiboot 1 loader hands the kernel EAX = [`BOOTLOADER_MAGIC`] and EBX =
//! the physical address of an information block (Multiboot Specification
//! 0.6.96, section 3.3 "Boot information format"). The hypervisor parses the
//! block its loader (GRUB, QEMU) gives it and [`build`]s one for the guest;
//! the guest parses the one it gets. Memory is reached only through
//! [`PhysRead`], so the same code runs on identity-mapped bare metal and on a
//! byte slice in host tests ([`SliceMem`]). Nothing here panics on garbage:
//! every read is bounds-checked and every malformed structure is an error.
//!
//! Layout of the part of the block this module knows (byte offsets):
//!
//! ```text
//!  0 flags          4 mem_lower     8 mem_upper    12 boot_device
//! 16 cmdline       20 mods_count   24 mods_addr    28 syms (16 bytes)
//! 44 mmap_length   48 mmap_addr    52 drives_length 56 drives_addr
//! 60 config_table  64 boot_loader_name  68 apm_table  72..88 VBE
//! ```

/// EAX at the kernel entry when a Multiboot 1 loader started it (spec 3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// `mem_lower`/`mem_upper` are valid.
pub const FLAG_MEM: u32 = 1 << 0;
/// `boot_device` is valid.
pub const FLAG_BOOT_DEVICE: u32 = 1 << 1;
/// `cmdline` is valid.
pub const FLAG_CMDLINE: u32 = 1 << 2;
/// `mods_count`/`mods_addr` are valid.
pub const FLAG_MODS: u32 = 1 << 3;
/// The a.out symbol table fields are valid.
pub const FLAG_AOUT_SYMS: u32 = 1 << 4;
/// The ELF section header fields are valid.
pub const FLAG_ELF_SHDR: u32 = 1 << 5;
/// `mmap_length`/`mmap_addr` are valid.
pub const FLAG_MMAP: u32 = 1 << 6;
/// `drives_length`/`drives_addr` are valid.
pub const FLAG_DRIVES: u32 = 1 << 7;
/// `config_table` is valid.
pub const FLAG_CONFIG_TABLE: u32 = 1 << 8;
/// `boot_loader_name` is valid.
pub const FLAG_BOOT_LOADER_NAME: u32 = 1 << 9;
/// `apm_table` is valid.
pub const FLAG_APM_TABLE: u32 = 1 << 10;
/// The VBE fields are valid.
pub const FLAG_VBE: u32 = 1 << 11;
/// The framebuffer fields (beyond the 88 bytes built here) are valid.
pub const FLAG_FRAMEBUFFER: u32 = 1 << 12;

/// Size of the information block [`build`] writes (up to the VBE fields).
pub const INFO_SIZE: usize = 88;
/// Size of one memory-map entry including its `size` field.
pub const MMAP_ENTRY_SIZE: usize = 24;
/// Value of an entry's `size` field for the 20-byte entries the spec defines
/// (the field does not count itself).
pub const MMAP_ENTRY_SIZE_FIELD: u32 = 20;
/// Size of one module entry (start, end, string, reserved).
pub const MODULE_ENTRY_SIZE: usize = 16;

/// Memory-map type: RAM available to the kernel.
pub const MMAP_AVAILABLE: u32 = 1;
/// Memory-map type: reserved.
pub const MMAP_RESERVED: u32 = 2;
/// Memory-map type: ACPI tables, reclaimable after reading them.
pub const MMAP_ACPI_RECLAIMABLE: u32 = 3;
/// Memory-map type: ACPI non-volatile storage, preserve across hibernation.
pub const MMAP_NVS: u32 = 4;
/// Memory-map type: defective RAM.
pub const MMAP_BADRAM: u32 = 5;

/// Byte offsets inside the information block.
mod off {
    pub const FLAGS: u64 = 0;
    pub const MEM_LOWER: u64 = 4;
    pub const MEM_UPPER: u64 = 8;
    pub const BOOT_DEVICE: u64 = 12;
    pub const CMDLINE: u64 = 16;
    pub const MODS_COUNT: u64 = 20;
    pub const MODS_ADDR: u64 = 24;
    pub const MMAP_LENGTH: u64 = 44;
    pub const MMAP_ADDR: u64 = 48;
    pub const BOOT_LOADER_NAME: u64 = 64;
    pub const FRAMEBUFFER_ADDR: u64 = 88;
    pub const FRAMEBUFFER_PITCH: u64 = 96;
    pub const FRAMEBUFFER_WIDTH: u64 = 100;
    pub const FRAMEBUFFER_HEIGHT: u64 = 104;
    /// bpp (u8), type (u8), then the colour information (6 bytes).
    pub const FRAMEBUFFER_BPP_TYPE: u64 = 108;
}

/// Read access to physical memory.
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`; `false` when any byte of the
    /// range is not readable (then `buf` is unspecified).
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// A byte slice standing for physical memory starting at `base`: the host
/// tests' memory, and a hypervisor's view of a copied-out guest buffer.
#[derive(Clone, Copy, Debug)]
pub struct SliceMem<'a> {
    /// Physical address of `bytes[0]`.
    pub base: u64,
    /// The memory.
    pub bytes: &'a [u8],
}

impl PhysRead for SliceMem<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(start) = addr.checked_sub(self.base) else { return false };
        let Ok(start) = usize::try_from(start) else { return false };
        let Some(end) = start.checked_add(buf.len()) else { return false };
        match self.bytes.get(start..end) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

fn read_u32<R: PhysRead + ?Sized>(mem: &R, addr: u64) -> Result<u32, InfoError> {
    let mut b = [0u8; 4];
    if mem.read(addr, &mut b) {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(InfoError::Unreadable { addr })
    }
}

fn read_u64<R: PhysRead + ?Sized>(mem: &R, addr: u64) -> Result<u64, InfoError> {
    let mut b = [0u8; 8];
    if mem.read(addr, &mut b) {
        Ok(u64::from_le_bytes(b))
    } else {
        Err(InfoError::Unreadable { addr })
    }
}

/// Why an information block, or a structure it points to, is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoError {
    /// The bytes at `addr` cannot be read.
    Unreadable {
        /// First address of the failed read.
        addr: u64,
    },
    /// A memory-map entry's `size` field is below the 20 bytes every entry
    /// needs (base, length, type).
    MmapEntryTooSmall {
        /// Address of the entry's `size` field.
        addr: u64,
        /// The `size` field.
        size: u32,
    },
    /// A memory-map entry (or its `size` field) runs past `mmap_addr +
    /// mmap_length`; this is also how a length that is not a whole number of
    /// entries shows up.
    MmapEntryPastEnd {
        /// Address of the entry's `size` field.
        addr: u64,
        /// Bytes of the map left at `addr`.
        remaining: u32,
    },
    /// A module whose `mod_end` lies below its `mod_start`.
    ModuleEndBeforeStart {
        /// Index of the module.
        index: u32,
    },
}

/// The fields of a Multiboot 1 information block, each present only when its
/// flag is set. Addresses are physical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// Physical address the block was read from.
    pub addr: u64,
    /// The `flags` word (`FLAG_*`).
    pub flags: u32,
    /// KiB of lower memory (from 0), when [`FLAG_MEM`].
    pub mem_lower_kb: Option<u32>,
    /// KiB of upper memory (from 1 MiB), when [`FLAG_MEM`].
    pub mem_upper_kb: Option<u32>,
    /// BIOS boot device, when [`FLAG_BOOT_DEVICE`].
    pub boot_device: Option<u32>,
    /// Address of the NUL-terminated command line, when [`FLAG_CMDLINE`].
    pub cmdline_addr: Option<u32>,
    /// Number of modules (0 without [`FLAG_MODS`]).
    pub mods_count: u32,
    /// Address of the module array (0 without [`FLAG_MODS`]).
    pub mods_addr: u32,
    /// Address of the first memory-map entry's `size` field (0 without
    /// [`FLAG_MMAP`]).
    pub mmap_addr: u32,
    /// Bytes of memory map (0 without [`FLAG_MMAP`]).
    pub mmap_length: u32,
    /// Address of the NUL-terminated boot loader name, when
    /// [`FLAG_BOOT_LOADER_NAME`].
    pub boot_loader_name_addr: Option<u32>,
    /// The display the loader set up, when [`FLAG_FRAMEBUFFER`] (spec 3.3,
    /// `framebuffer_*` fields at offsets 88..116).
    pub framebuffer: Option<crate::screen::Framebuffer>,
}

/// Reads the information block at `info_addr`. Only the fixed part is read
/// here; the memory map and modules are read lazily by [`Info::mmap`] and
/// [`Info::modules`], which report their own errors.
pub fn parse<R: PhysRead + ?Sized>(mem: &R, info_addr: u64) -> Result<Info, InfoError> {
    let field = |o: u64| read_u32(mem, info_addr.wrapping_add(o));
    let flags = field(off::FLAGS)?;
    let when = |flag: u32, o: u64| -> Result<Option<u32>, InfoError> {
        if flags & flag != 0 {
            field(o).map(Some)
        } else {
            Ok(None)
        }
    };
    let (mods_count, mods_addr) = match when(FLAG_MODS, off::MODS_COUNT)? {
        Some(n) => (n, field(off::MODS_ADDR)?),
        None => (0, 0),
    };
    let (mmap_length, mmap_addr) = match when(FLAG_MMAP, off::MMAP_LENGTH)? {
        Some(n) => (n, field(off::MMAP_ADDR)?),
        None => (0, 0),
    };
    Ok(Info {
        addr: info_addr,
        flags,
        mem_lower_kb: when(FLAG_MEM, off::MEM_LOWER)?,
        mem_upper_kb: when(FLAG_MEM, off::MEM_UPPER)?,
        boot_device: when(FLAG_BOOT_DEVICE, off::BOOT_DEVICE)?,
        cmdline_addr: when(FLAG_CMDLINE, off::CMDLINE)?,
        mods_count,
        mods_addr,
        mmap_addr,
        mmap_length,
        boot_loader_name_addr: when(FLAG_BOOT_LOADER_NAME, off::BOOT_LOADER_NAME)?,
        framebuffer: if flags & FLAG_FRAMEBUFFER != 0 { Some(framebuffer(mem, info_addr)?) } else { None },
    })
}

/// The `framebuffer_*` fields. Type 0 is indexed colour, 1 direct RGB
/// (then the colour information gives each channel's position and size),
/// 2 EGA text.
fn framebuffer<R: PhysRead + ?Sized>(mem: &R, info_addr: u64) -> Result<crate::screen::Framebuffer, InfoError> {
    use crate::screen::{Channel, Framebuffer, FramebufferKind, PixelFormat};
    let at = |o: u64| info_addr.wrapping_add(o);
    let mut b = [0u8; 8];
    if !mem.read(at(off::FRAMEBUFFER_BPP_TYPE), &mut b) {
        return Err(InfoError::Unreadable { addr: at(off::FRAMEBUFFER_BPP_TYPE) });
    }
    let ch = |i: usize| Channel { pos: b[2 + 2 * i], size: b[3 + 2 * i] };
    let kind = match b[1] {
        1 => FramebufferKind::Rgb(PixelFormat { red: ch(0), green: ch(1), blue: ch(2) }),
        2 => FramebufferKind::EgaText,
        _ => FramebufferKind::Indexed,
    };
    Ok(Framebuffer {
        addr: read_u64(mem, at(off::FRAMEBUFFER_ADDR))?,
        pitch: read_u32(mem, at(off::FRAMEBUFFER_PITCH))?,
        width: read_u32(mem, at(off::FRAMEBUFFER_WIDTH))?,
        height: read_u32(mem, at(off::FRAMEBUFFER_HEIGHT))?,
        bpp: b[0],
        kind,
    })
}

impl Info {
    /// True when every bit of `flags` is set.
    pub const fn has(&self, flags: u32) -> bool {
        self.flags & flags == flags
    }

    /// The memory-map entries (none without [`FLAG_MMAP`]).
    pub fn mmap<'m, R: PhysRead + ?Sized>(&self, mem: &'m R) -> MmapIter<'m, R> {
        let start = u64::from(self.mmap_addr);
        MmapIter { mem, next: start, end: start + u64::from(self.mmap_length), done: false }
    }

    /// The module entries (none without [`FLAG_MODS`]).
    pub fn modules<'m, R: PhysRead + ?Sized>(&self, mem: &'m R) -> ModuleIter<'m, R> {
        ModuleIter { mem, addr: u64::from(self.mods_addr), index: 0, count: self.mods_count, done: false }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmapEntry {
    /// First physical address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// `MMAP_*` type; [`MMAP_AVAILABLE`] (1) is usable RAM.
    pub kind: u32,
}

impl MmapEntry {
    /// One past the last address (saturating at 2^64).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }

    /// True for usable RAM.
    pub const fn is_available(&self) -> bool {
        self.kind == MMAP_AVAILABLE
    }
}

/// Iterator over the memory map: yields entries, then ends; on a malformed
/// entry it yields one error and ends.
#[derive(Debug)]
pub struct MmapIter<'m, R: PhysRead + ?Sized> {
    mem: &'m R,
    next: u64,
    end: u64,
    done: bool,
}

impl<R: PhysRead + ?Sized> MmapIter<'_, R> {
    fn entry(&mut self) -> Result<MmapEntry, InfoError> {
        let addr = self.next;
        let remaining = (self.end - addr) as u32;
        if remaining < 4 {
            return Err(InfoError::MmapEntryPastEnd { addr, remaining });
        }
        let size = read_u32(self.mem, addr)?;
        if size < MMAP_ENTRY_SIZE_FIELD {
            return Err(InfoError::MmapEntryTooSmall { addr, size });
        }
        if u64::from(size) + 4 > u64::from(remaining) {
            return Err(InfoError::MmapEntryPastEnd { addr, remaining });
        }
        let entry = MmapEntry {
            base: read_u64(self.mem, addr + 4)?,
            len: read_u64(self.mem, addr + 12)?,
            kind: read_u32(self.mem, addr + 20)?,
        };
        self.next = addr + 4 + u64::from(size);
        Ok(entry)
    }
}

impl<R: PhysRead + ?Sized> Iterator for MmapIter<'_, R> {
    type Item = Result<MmapEntry, InfoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.end {
            return None;
        }
        let r = self.entry();
        self.done = r.is_err();
        Some(r)
    }
}

/// One boot module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// First byte of the module.
    pub start: u32,
    /// One past the last byte of the module.
    pub end: u32,
    /// Address of the module's NUL-terminated string (0 when none).
    pub cmdline_addr: u32,
}

/// Iterator over the module array: yields modules; on an unreadable or
/// malformed entry it yields one error and ends.
#[derive(Debug)]
pub struct ModuleIter<'m, R: PhysRead + ?Sized> {
    mem: &'m R,
    addr: u64,
    index: u32,
    count: u32,
    done: bool,
}

impl<R: PhysRead + ?Sized> Iterator for ModuleIter<'_, R> {
    type Item = Result<Module, InfoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.index >= self.count {
            return None;
        }
        let a = self.addr + u64::from(self.index) * MODULE_ENTRY_SIZE as u64;
        let r = (|| {
            let m = Module {
                start: read_u32(self.mem, a)?,
                end: read_u32(self.mem, a + 4)?,
                cmdline_addr: read_u32(self.mem, a + 8)?,
            };
            if m.end < m.start {
                return Err(InfoError::ModuleEndBeforeStart { index: self.index });
            }
            Ok(m)
        })();
        self.index += 1;
        self.done = r.is_err();
        Some(r)
    }
}

/// Reads the NUL-terminated string at `addr` into `buf`. `None` when a byte
/// is unreadable, no NUL occurs within `buf.len()` bytes, or the string is
/// not UTF-8.
pub fn read_cstr<'b, R: PhysRead + ?Sized>(mem: &R, addr: u64, buf: &'b mut [u8]) -> Option<&'b str> {
    for i in 0..buf.len() {
        let mut b = [0u8; 1];
        if !mem.read(addr.checked_add(i as u64)?, &mut b) {
            return None;
        }
        if b[0] == 0 {
            return core::str::from_utf8(&buf[..i]).ok();
        }
        buf[i] = b[0];
    }
    None
}

/// Why [`build`] could not write a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The buffer holds fewer than `needed` bytes.
    BufferTooSmall {
        /// Bytes the block needs.
        needed: usize,
    },
    /// An address inside the block would not fit in 32 bits.
    AddressOverflow,
    /// A string contains a NUL byte (it would end early).
    NulInString,
}

/// Writes an information block into `buf`, which will sit at guest-physical
/// `base_addr`: the 88-byte block at offset 0 with flags
/// MEM | CMDLINE | MMAP | BOOT_LOADER_NAME, then the memory map (24-byte
/// entries, `size` = 20), then the NUL-terminated command line and boot
/// loader name. Every address inside is `base_addr` + offset. Returns the
/// bytes used.
pub fn build(
    buf: &mut [u8],
    base_addr: u32,
    mem_lower_kb: u32,
    mem_upper_kb: u32,
    mmap: &[MmapEntry],
    cmdline: &str,
    boot_loader_name: &str,
) -> Result<usize, BuildError> {
    if cmdline.contains('\0') || boot_loader_name.contains('\0') {
        return Err(BuildError::NulInString);
    }
    let mmap_off = INFO_SIZE;
    let mmap_len = mmap.len().checked_mul(MMAP_ENTRY_SIZE).ok_or(BuildError::AddressOverflow)?;
    let cmdline_off = mmap_off + mmap_len;
    let name_off = cmdline_off.checked_add(cmdline.len() + 1).ok_or(BuildError::AddressOverflow)?;
    let needed = name_off.checked_add(boot_loader_name.len() + 1).ok_or(BuildError::AddressOverflow)?;
    if buf.len() < needed {
        return Err(BuildError::BufferTooSmall { needed });
    }
    let addr = |o: usize| -> Result<u32, BuildError> {
        u32::try_from(o).ok().and_then(|o| base_addr.checked_add(o)).ok_or(BuildError::AddressOverflow)
    };
    // The last byte must be addressable too.
    addr(needed - 1)?;
    let mmap_len32 = u32::try_from(mmap_len).map_err(|_| BuildError::AddressOverflow)?;

    let buf = &mut buf[..needed];
    buf[..INFO_SIZE].fill(0);
    let mut put32 = |o: u64, v: u32| buf[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
    put32(off::FLAGS, FLAG_MEM | FLAG_CMDLINE | FLAG_MMAP | FLAG_BOOT_LOADER_NAME);
    put32(off::MEM_LOWER, mem_lower_kb);
    put32(off::MEM_UPPER, mem_upper_kb);
    put32(off::CMDLINE, addr(cmdline_off)?);
    put32(off::MMAP_LENGTH, mmap_len32);
    put32(off::MMAP_ADDR, addr(mmap_off)?);
    put32(off::BOOT_LOADER_NAME, addr(name_off)?);
    for (i, e) in mmap.iter().enumerate() {
        let o = mmap_off + i * MMAP_ENTRY_SIZE;
        buf[o..o + 4].copy_from_slice(&MMAP_ENTRY_SIZE_FIELD.to_le_bytes());
        buf[o + 4..o + 12].copy_from_slice(&e.base.to_le_bytes());
        buf[o + 12..o + 20].copy_from_slice(&e.len.to_le_bytes());
        buf[o + 20..o + 24].copy_from_slice(&e.kind.to_le_bytes());
    }
    buf[cmdline_off..cmdline_off + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    buf[cmdline_off + cmdline.len()] = 0;
    buf[name_off..name_off + boot_loader_name.len()].copy_from_slice(boot_loader_name.as_bytes());
    buf[name_off + boot_loader_name.len()] = 0;
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    const BASE: u32 = 0x9000;

    const MAP: [MmapEntry; 3] = [
        MmapEntry { base: 0, len: 0x9fc00, kind: MMAP_AVAILABLE },
        MmapEntry { base: 0xf0000, len: 0x10000, kind: MMAP_RESERVED },
        MmapEntry { base: 0x10_0000, len: 0x7ee_0000, kind: MMAP_AVAILABLE },
    ];

    fn built(buf: &mut [u8; 512]) -> usize {
        build(buf, BASE, 639, 130_048, &MAP, "/guest expect_hv=1", "quadrant").unwrap()
    }

    fn put(buf: &mut [u8], o: usize, v: u32) {
        buf[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn build_then_parse_round_trips() {
        let mut buf = [0xAAu8; 512];
        let n = built(&mut buf);
        assert_eq!(n, 88 + 3 * 24 + "/guest expect_hv=1".len() + 1 + "quadrant".len() + 1);
        let mem = SliceMem { base: u64::from(BASE), bytes: &buf[..n] };
        let info = parse(&mem, u64::from(BASE)).unwrap();
        assert!(info.has(FLAG_MEM | FLAG_CMDLINE | FLAG_MMAP | FLAG_BOOT_LOADER_NAME));
        assert!(!info.has(FLAG_MODS));
        assert_eq!(info.mem_lower_kb, Some(639));
        assert_eq!(info.mem_upper_kb, Some(130_048));
        assert_eq!(info.boot_device, None);
        assert_eq!(info.mmap_addr, BASE + 88);
        assert_eq!(info.mmap_length, 72);
        let mut got = [MmapEntry { base: 0, len: 0, kind: 0 }; 3];
        let mut count = 0;
        for (i, e) in info.mmap(&mem).enumerate() {
            got[i] = e.unwrap();
            count += 1;
        }
        assert_eq!((count, got), (3, MAP));
        let mut s = [0u8; 64];
        assert_eq!(read_cstr(&mem, info.cmdline_addr.unwrap().into(), &mut s), Some("/guest expect_hv=1"));
        assert_eq!(read_cstr(&mem, info.boot_loader_name_addr.unwrap().into(), &mut s), Some("quadrant"));
        assert_eq!(info.modules(&mem).count(), 0);
    }

    #[test]
    fn framebuffer_fields() {
        use crate::screen::{Channel, FramebufferKind, PixelFormat};
        let mut buf = [0u8; 128];
        put(&mut buf, 0, FLAG_FRAMEBUFFER);
        buf[88..96].copy_from_slice(&0xfd00_0000u64.to_le_bytes());
        put(&mut buf, 96, 4096);
        put(&mut buf, 100, 1024);
        put(&mut buf, 104, 768);
        buf[108..116].copy_from_slice(&[32, 1, 16, 8, 8, 8, 0, 8]);
        let mem = SliceMem { base: 0, bytes: &buf };
        let fb = parse(&mem, 0).unwrap().framebuffer.unwrap();
        assert_eq!((fb.addr, fb.pitch, fb.width, fb.height, fb.bpp), (0xfd00_0000, 4096, 1024, 768, 32));
        let c = |pos, size| Channel { pos, size };
        assert_eq!(fb.kind, FramebufferKind::Rgb(PixelFormat { red: c(16, 8), green: c(8, 8), blue: c(0, 8) }));
        buf[109] = 2;
        let mem = SliceMem { base: 0, bytes: &buf };
        assert_eq!(parse(&mem, 0).unwrap().framebuffer.unwrap().kind, FramebufferKind::EgaText);
        // Cut short inside the framebuffer fields.
        let mem = SliceMem { base: 0, bytes: &buf[..110] };
        assert!(matches!(parse(&mem, 0), Err(InfoError::Unreadable { .. })));
        // Without the flag nothing is read there.
        assert_eq!(parse(&SliceMem { base: 0, bytes: &[0u8; 88] }, 0).unwrap().framebuffer, None);
    }

    #[test]
    fn empty_map_and_strings() {
        let mut buf = [0u8; 90];
        assert_eq!(build(&mut buf, 0, 0, 0, &[], "", ""), Ok(90));
        let mem = SliceMem { base: 0, bytes: &buf };
        let info = parse(&mem, 0).unwrap();
        assert_eq!(info.mmap(&mem).count(), 0);
        assert_eq!(read_cstr(&mem, info.cmdline_addr.unwrap().into(), &mut [0u8; 4]), Some(""));
    }

    #[test_case(0 ; "empty buffer")]
    #[test_case(88 ; "no room for the map")]
    #[test_case(88 + 72 + 19 ; "no room for the last NUL")]
    fn build_rejects_small_buffers(len: usize) {
        let mut buf = [0u8; 512];
        let r = build(&mut buf[..len], BASE, 639, 130_048, &MAP, "/guest expect_hv=1", "quadrant");
        assert_eq!(r, Err(BuildError::BufferTooSmall { needed: 88 + 72 + 19 + 9 }));
    }

    #[test]
    fn build_rejects_overflow_and_nul() {
        let mut buf = [0u8; 512];
        assert_eq!(build(&mut buf, u32::MAX - 100, 0, 0, &MAP, "", ""), Err(BuildError::AddressOverflow));
        assert_eq!(build(&mut buf, 0, 0, 0, &MAP, "a\0b", ""), Err(BuildError::NulInString));
    }

    #[test]
    fn mmap_length_not_a_whole_entry() {
        let mut buf = [0u8; 512];
        let n = built(&mut buf);
        put(&mut buf, 44, 72 - 5);
        let mem = SliceMem { base: u64::from(BASE), bytes: &buf[..n] };
        let info = parse(&mem, u64::from(BASE)).unwrap();
        let mut it = info.mmap(&mem);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        assert_eq!(
            it.next(),
            Some(Err(InfoError::MmapEntryPastEnd { addr: u64::from(BASE) + 88 + 48, remaining: 19 }))
        );
        assert_eq!(it.next(), None);
    }

    #[test]
    fn mmap_entry_size_past_end_or_too_small() {
        let mut buf = [0u8; 512];
        let n = built(&mut buf);
        put(&mut buf, 88 + 24, 1000);
        let mem = SliceMem { base: u64::from(BASE), bytes: &buf[..n] };
        let info = parse(&mem, u64::from(BASE)).unwrap();
        let mut it = info.mmap(&mem);
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(it.next(), Some(Err(InfoError::MmapEntryPastEnd { remaining: 48, .. }))));
        assert_eq!(it.next(), None);

        put(&mut buf, 88 + 24, 3);
        let mem = SliceMem { base: u64::from(BASE), bytes: &buf[..n] };
        let mut it = info.mmap(&mem);
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(it.next(), Some(Err(InfoError::MmapEntryTooSmall { size: 3, .. }))));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn larger_entry_size_is_skipped_over() {
        // An entry whose size field is 28 carries 8 bytes the spec does not
        // define; the iterator steps over them.
        let mut buf = [0u8; 128];
        put(&mut buf, 0, FLAG_MMAP);
        put(&mut buf, 44, 32 + 24);
        put(&mut buf, 48, 0x40);
        put(&mut buf, 0x40, 28);
        buf[0x44..0x4c].copy_from_slice(&0x1000u64.to_le_bytes());
        buf[0x4c..0x54].copy_from_slice(&0x2000u64.to_le_bytes());
        put(&mut buf, 0x54, 1);
        put(&mut buf, 0x60, 20);
        put(&mut buf, 0x60 + 20, 2);
        let mem = SliceMem { base: 0, bytes: &buf };
        let info = parse(&mem, 0).unwrap();
        let mut it = info.mmap(&mem);
        assert_eq!(it.next(), Some(Ok(MmapEntry { base: 0x1000, len: 0x2000, kind: 1 })));
        assert_eq!(it.next(), Some(Ok(MmapEntry { base: 0, len: 0, kind: 2 })));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn unreadable_addresses() {
        let mut buf = [0u8; 512];
        let n = built(&mut buf);
        let mem = SliceMem { base: u64::from(BASE), bytes: &buf[..n] };
        assert_eq!(parse(&mem, 0x1000), Err(InfoError::Unreadable { addr: 0x1000 }));
        // The block itself cut short after the flags word.
        let short = SliceMem { base: u64::from(BASE), bytes: &buf[..6] };
        assert!(matches!(parse(&short, u64::from(BASE)), Err(InfoError::Unreadable { .. })));
        // The map pointing outside memory.
        let mut bad = buf;
        put(&mut bad, 48, 0x10);
        let mem = SliceMem { base: u64::from(BASE), bytes: &bad[..n] };
        let info = parse(&mem, u64::from(BASE)).unwrap();
        let mut it = info.mmap(&mem);
        assert_eq!(it.next(), Some(Err(InfoError::Unreadable { addr: 0x10 })));
        assert_eq!(it.next(), None);
        // Strings: unreadable, unterminated within the buffer, not UTF-8.
        let mut s = [0u8; 8];
        assert_eq!(read_cstr(&mem, 0x10, &mut s), None);
        assert_eq!(read_cstr(&mem, info.cmdline_addr.unwrap().into(), &mut s), None);
        let raw = [0xffu8, 0xfe, 0];
        assert_eq!(read_cstr(&SliceMem { base: 0, bytes: &raw }, 0, &mut s), None);
        assert_eq!(read_cstr(&SliceMem { base: 0, bytes: &raw }, u64::MAX, &mut s), None);
    }

    #[test]
    fn modules_parse_and_reject_garbage() {
        let mut buf = [0u8; 256];
        put(&mut buf, 0, FLAG_MODS);
        put(&mut buf, 20, 3);
        put(&mut buf, 24, 0x80);
        let m = [(0x20_0000u32, 0x20_1000u32, 0x100u32), (0x30_0000, 0x30_0000, 0), (0x50_0000, 0x40_0000, 0)];
        for (i, (s, e, c)) in m.iter().enumerate() {
            put(&mut buf, 0x80 + 16 * i, *s);
            put(&mut buf, 0x84 + 16 * i, *e);
            put(&mut buf, 0x88 + 16 * i, *c);
        }
        let mem = SliceMem { base: 0, bytes: &buf };
        let info = parse(&mem, 0).unwrap();
        let mut it = info.modules(&mem);
        assert_eq!(it.next(), Some(Ok(Module { start: 0x20_0000, end: 0x20_1000, cmdline_addr: 0x100 })));
        assert_eq!(it.next(), Some(Ok(Module { start: 0x30_0000, end: 0x30_0000, cmdline_addr: 0 })));
        assert_eq!(it.next(), Some(Err(InfoError::ModuleEndBeforeStart { index: 2 })));
        assert_eq!(it.next(), None);
        // A module array past the end of memory.
        put(&mut buf, 24, 0xf8);
        let mem = SliceMem { base: 0, bytes: &buf };
        let info = parse(&mem, 0).unwrap();
        assert_eq!(info.modules(&mem).next(), Some(Err(InfoError::Unreadable { addr: 0xf8 + 8 })));
    }

    #[test]
    fn parse_never_panics_on_random_blocks() {
        // A cheap deterministic fuzz: xorshift bytes as blocks, maps, modules.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut buf = [0u8; 256];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Keep map and module pointers mostly inside the buffer.
            put(&mut buf, 48, (x as u32) & 0xff);
            put(&mut buf, 44, ((x >> 8) as u32) & 0x1ff);
            put(&mut buf, 24, ((x >> 16) as u32) & 0xff);
            put(&mut buf, 20, ((x >> 24) as u32) & 0x1f);
            let mem = SliceMem { base: 0, bytes: &buf };
            if let Ok(info) = parse(&mem, 0) {
                assert!(info.mmap(&mem).take(1000).count() < 1000);
                let _ = info.modules(&mem).count();
                let _ = read_cstr(&mem, u64::from(info.cmdline_addr.unwrap_or(0)), &mut [0u8; 32]);
            }
        }
    }
}
