//! Raw physical memory: the one module that turns physical addresses into
//! pointers. The boot code identity-maps the low 4 GiB (bare-rt), so a
//! physical address below 4 GiB is also its linear address.
//!
//! Owners of memory regions are built here and handed out as safe
//! objects: [`GuestRam`] (the host region that backs guest-physical
//! 0..size), [`FramePool`] (4 KiB frames for page tables the CPU walks:
//! the hypervisor's shadow tables and VMX regions) and [`DisplayMemory`]
//! (a framebuffer or VGA text memory, mapped here when it lies above
//! 4 GiB). All bounds-check every access, so code above this module needs
//! no `unsafe` for memory. [`BootMemory`] reads what the boot loader left,
//! including the Multiboot 2 boot information.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Size of a frame.
pub const FRAME: u64 = 4096;

/// The host memory that backs guest-physical addresses `0..size`.
#[derive(Debug)]
pub struct GuestRam {
    base: u64,
    size: u64,
}

impl GuestRam {
    /// Takes ownership of `[base, base + size)`.
    ///
    /// # Safety
    /// The range must be RAM below 4 GiB (identity-mapped), used by nothing
    /// else for the rest of the run (the guest excepted, which is the point).
    pub unsafe fn new(base: u64, size: u64) -> Self {
        GuestRam { base, size }
    }

    /// Bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host-physical address of guest-physical 0.
    pub fn base_hpa(&self) -> u64 {
        self.base
    }

    /// Host-physical address backing `gpa`, or `None` outside guest RAM.
    pub fn gpa_to_hpa(&self, gpa: u64) -> Option<u64> {
        (gpa < self.size).then(|| self.base + gpa)
    }

    fn range_ok(&self, gpa: u64, len: usize) -> bool {
        gpa.checked_add(len as u64).is_some_and(|end| end <= self.size)
    }

    /// Copies guest memory at `gpa` into `buf`; false when any byte is
    /// outside guest RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        if !self.range_ok(gpa, buf.len()) {
            return false;
        }
        // SAFETY: the range is inside the region this object owns (checked
        // above); the guest may change it concurrently, which a byte copy
        // tolerates (we never form references into guest memory).
        unsafe { ptr::copy((self.base + gpa) as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` into guest memory at `gpa`; false when any byte is
    /// outside guest RAM.
    pub fn write(&self, gpa: u64, data: &[u8]) -> bool {
        if !self.range_ok(gpa, data.len()) {
            return false;
        }
        // SAFETY: as in `read`.
        unsafe { ptr::copy(data.as_ptr(), (self.base + gpa) as *mut u8, data.len()) };
        true
    }

    /// Zeroes `len` bytes at `gpa`; false when outside guest RAM.
    pub fn zero(&self, gpa: u64, len: usize) -> bool {
        if !self.range_ok(gpa, len) {
            return false;
        }
        // SAFETY: as in `read`.
        unsafe { ptr::write_bytes((self.base + gpa) as *mut u8, 0, len) };
        true
    }

    /// Reads a naturally aligned little-endian u64 (one access).
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        if !gpa.is_multiple_of(8) || !self.range_ok(gpa, 8) {
            return None;
        }
        // SAFETY: aligned and inside the owned region; volatile because the
        // guest owns the contents.
        Some(unsafe { ptr::read_volatile((self.base + gpa) as *const u64) })
    }

    /// Writes a naturally aligned little-endian u64 (one access).
    pub fn write_u64(&self, gpa: u64, v: u64) -> bool {
        if !gpa.is_multiple_of(8) || !self.range_ok(gpa, 8) {
            return false;
        }
        // SAFETY: as in `read_u64`.
        unsafe { ptr::write_volatile((self.base + gpa) as *mut u64, v) };
        true
    }

    /// Reads a naturally aligned u32 (one access).
    pub fn read_u32(&self, gpa: u64) -> Option<u32> {
        if !gpa.is_multiple_of(4) || !self.range_ok(gpa, 4) {
            return None;
        }
        // SAFETY: as in `read_u64`.
        Some(unsafe { ptr::read_volatile((self.base + gpa) as *const u32) })
    }

    /// Writes a naturally aligned u32 (one access).
    pub fn write_u32(&self, gpa: u64, v: u32) -> bool {
        if !gpa.is_multiple_of(4) || !self.range_ok(gpa, 4) {
            return false;
        }
        // SAFETY: as in `read_u64`.
        unsafe { ptr::write_volatile((self.base + gpa) as *mut u32, v) };
        true
    }

    /// LOCK CMPXCHG of a naturally aligned u64: `Some(true)` when `old` was
    /// there and `new` replaced it, `Some(false)` when another value was
    /// there, `None` outside guest RAM or misaligned.
    pub fn cmpxchg_u64(&self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        if !gpa.is_multiple_of(8) || !self.range_ok(gpa, 8) {
            return None;
        }
        // SAFETY: aligned and inside the owned region; guest CPUs access it
        // concurrently, which is what the atomic instruction is for.
        let a = unsafe { &*((self.base + gpa) as *const AtomicU64) };
        Some(a.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok())
    }

    /// LOCK CMPXCHG of a naturally aligned u32 (see [`GuestRam::cmpxchg_u64`]).
    pub fn cmpxchg_u32(&self, gpa: u64, old: u32, new: u32) -> Option<bool> {
        if !gpa.is_multiple_of(4) || !self.range_ok(gpa, 4) {
            return None;
        }
        // SAFETY: as in `cmpxchg_u64`.
        let a = unsafe { &*((self.base + gpa) as *const AtomicU32) };
        Some(a.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok())
    }
}

/// A block of 4 KiB frames owned by the hypervisor, handed out one at a
/// time (zeroed) and read/written as 512-entry tables.
#[derive(Debug)]
pub struct FramePool {
    base: u64,
    frames: usize,
    next: usize,
    free_list: alloc::vec::Vec<u64>,
}

impl FramePool {
    /// Takes ownership of `frames` frames at `base`.
    ///
    /// # Safety
    /// `[base, base + frames * 4096)` must be 4 KiB-aligned RAM below 4 GiB,
    /// used by nothing else for the rest of the run.
    pub unsafe fn new(base: u64, frames: usize) -> Self {
        debug_assert_eq!(base % FRAME, 0);
        FramePool { base, frames, next: 0, free_list: alloc::vec::Vec::new() }
    }

    /// Number of frames in the pool.
    pub fn capacity(&self) -> usize {
        self.frames
    }

    /// Frames handed out and not freed.
    pub fn in_use(&self) -> usize {
        self.next - self.free_list.len()
    }

    fn owns(&self, hpa: u64) -> bool {
        hpa >= self.base && hpa < self.base + self.frames as u64 * FRAME && hpa.is_multiple_of(FRAME)
    }

    /// A zeroed frame, or `None` when the pool is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        let hpa = match self.free_list.pop() {
            Some(f) => f,
            None if self.next < self.frames => {
                self.next += 1;
                self.base + (self.next as u64 - 1) * FRAME
            }
            None => return None,
        };
        // SAFETY: the frame belongs to this pool and is not handed out.
        unsafe { ptr::write_bytes(hpa as *mut u8, 0, FRAME as usize) };
        Some(hpa)
    }

    /// Returns a frame to the pool.
    pub fn free(&mut self, hpa: u64) {
        assert!(self.owns(hpa), "freeing frame {hpa:#x} that is not in the pool");
        self.free_list.push(hpa);
    }

    /// Returns every frame to the pool.
    pub fn free_all(&mut self) {
        self.free_list.clear();
        self.next = 0;
    }

    /// Reads entry `index` of the table in frame `hpa`.
    pub fn read_entry(&self, hpa: u64, index: usize) -> u64 {
        assert!(self.owns(hpa) && index < 512, "table access {hpa:#x}[{index}] outside the pool");
        // SAFETY: inside a frame this pool owns; the CPU may set A/D bits
        // concurrently, hence volatile.
        unsafe { ptr::read_volatile((hpa as *const u64).add(index)) }
    }

    /// Reads all 512 entries of the table in frame `hpa`.
    pub fn read_table(&self, hpa: u64, out: &mut [u64; 512]) {
        assert!(self.owns(hpa), "table read {hpa:#x} outside the pool");
        for (i, e) in out.iter_mut().enumerate() {
            // SAFETY: as in `read_entry`; i < 512 keeps it inside the frame.
            *e = unsafe { ptr::read_volatile((hpa as *const u64).add(i)) };
        }
    }

    /// Writes entry `index` of the table in frame `hpa`.
    pub fn write_entry(&self, hpa: u64, index: usize, v: u64) {
        assert!(self.owns(hpa) && index < 512, "table access {hpa:#x}[{index}] outside the pool");
        // SAFETY: as in `read_entry`.
        unsafe { ptr::write_volatile((hpa as *mut u64).add(index), v) };
    }

    /// Writes the first 4 bytes of frame `hpa` (the VMCS/VMXON revision id).
    pub fn write_u32_at(&self, hpa: u64, offset: usize, v: u32) {
        assert!(self.owns(hpa) && offset + 4 <= FRAME as usize);
        // SAFETY: inside a frame this pool owns.
        unsafe { ptr::write_volatile((hpa + offset as u64) as *mut u32, v) };
    }
}

/// EPT paging structures (`mmu=ept`) in pool frames.
impl crate::vmx::ept::EptTables for FramePool {
    fn alloc_table(&mut self) -> Option<u64> {
        self.alloc()
    }
    fn read_entry(&self, table: u64, index: usize) -> u64 {
        FramePool::read_entry(self, table, index)
    }
    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        FramePool::write_entry(self, table, index, value)
    }
}

/// Reads physical memory below 4 GiB that the firmware or boot loader
/// handed over (the Multiboot information and modules).
#[derive(Clone, Copy, Debug)]
pub struct BootMemory;

impl BootMemory {
    /// Copies physical memory; false when the range is not below 4 GiB.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if addr.checked_add(buf.len() as u64).is_none_or(|e| e > 1 << 32) || addr == 0 {
            return false;
        }
        // SAFETY: the low 4 GiB are identity-mapped; boot-loader data is
        // read-only to us and never freed.
        unsafe { ptr::copy(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// A module's bytes, borrowed for the rest of the run.
    ///
    /// # Safety
    /// `[start, end)` must be a boot module the loader placed in RAM below
    /// 4 GiB, which nothing will overwrite (the allocator reserves it).
    pub unsafe fn module(&self, start: u64, end: u64) -> &'static [u8] {
        // SAFETY: the caller guarantees the range.
        unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) }
    }

    /// The Multiboot 2 boot information at `addr` (EBX at entry), borrowed
    /// for the rest of the run: the loader's memory is never freed, and the
    /// caller keeps its range out of the allocator (`BootInfo::info_range`).
    pub fn multiboot2(&self, addr: u64) -> Result<multiboot2::BootInformation<'static>, &'static str> {
        let mut head = [0u8; 8];
        if !self.read(addr, &mut head) {
            return Err("its address is not readable memory below 4 GiB");
        }
        let total = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        if !addr.is_multiple_of(8) {
            return Err("its address is not 8-byte aligned");
        }
        if total < 16 || addr + total > 1 << 32 {
            return Err("its total_size is below 16 bytes or runs past 4 GiB");
        }
        // SAFETY: `[addr, addr + total)` is identity-mapped boot-loader
        // memory below 4 GiB (checked above) that nothing writes for the
        // rest of the run; `load` reads only within total_size.
        unsafe { multiboot2::BootInformation::load(addr as *const multiboot2::BootInformationHeader) }
            .map_err(|_| "its tags are malformed (a size runs past total_size, or no end tag)")
    }
}

impl shared::multiboot::PhysRead for BootMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        BootMemory::read(self, addr, buf)
    }
}

/// Multiboot 2 boot information held in `bytes` (host tests build it so).
/// Refuses a misaligned slice and a total_size larger than the slice.
pub fn multiboot2_from_bytes(bytes: &[u8]) -> Result<multiboot2::BootInformation<'_>, &'static str> {
    if !(bytes.as_ptr() as usize).is_multiple_of(8) {
        return Err("not 8-byte aligned");
    }
    let total = match bytes.get(..4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
        None => return Err("shorter than its header"),
    };
    if total < 16 || total > bytes.len() {
        return Err("total_size is below 16 bytes or larger than the buffer");
    }
    // SAFETY: the structure lies inside `bytes` (total_size checked against
    // its length), which is aligned and borrowed for the result's lifetime.
    unsafe { multiboot2::BootInformation::load(bytes.as_ptr().cast()) }.map_err(|_| "its tags are malformed")
}

/// Display memory (a framebuffer or VGA text memory), written one pixel or
/// cell at a time with bounds checks.
#[derive(Debug)]
pub struct DisplayMemory {
    base: u64,
    len: u64,
}

/// Page directories for display memory above 4 GiB (UEFI firmware often
/// places the GOP framebuffer there): each maps 1 GiB in 2 MiB pages.
#[repr(C, align(4096))]
struct HighPds([[u64; 512]; 2]);
static HIGH_PDS: spin::Mutex<HighPds> = spin::Mutex::new(HighPds([[0; 512]; 2]));

impl DisplayMemory {
    /// Takes `[base, base + len)` as display memory, identity-mapping it
    /// first when it lies above 4 GiB (below 512 GiB and within 2 GiB of
    /// 1 GiB-aligned space; beyond that the error says so).
    ///
    /// # Safety
    /// The range must be display memory the boot loader described (not RAM
    /// anything else uses), and this is called once per range.
    pub unsafe fn new(base: u64, len: u64) -> Result<Self, &'static str> {
        let end = base.checked_add(len).ok_or("its size overflows")?;
        if len == 0 {
            return Err("it is empty");
        }
        if end > 1 << 32 {
            const GIB: u64 = 1 << 30;
            if end > 512 * GIB {
                return Err("it lies above 512 GiB, beyond the boot page tables' first PML4 entry");
            }
            let (first, last) = (base / GIB, (end - 1) / GIB);
            if last - first >= 2 {
                return Err("it spans more than two 1 GiB regions");
            }
            // The boot tables (bare-rt): CR3 -> PML4, whose entry 0 is the
            // PDPT; its entries 0..4 map the low 4 GiB, the rest are free.
            let pml4 = super::cpu::cr3() & !0xfff;
            // SAFETY: the PML4 is identity-mapped boot memory below 4 GiB.
            let pdpt = unsafe { ptr::read_volatile(pml4 as *const u64) } & 0x000f_ffff_ffff_f000;
            let mut pds = HIGH_PDS.lock();
            for (i, gib) in (first..=last).enumerate() {
                let pd = &mut pds.0[i];
                for (j, e) in pd.iter_mut().enumerate() {
                    // 2 MiB page, present, writable (SDM Vol. 3A 4.5, Table 4-17).
                    *e = (gib * GIB + ((j as u64) << 21)) | 0x83;
                }
                let pd_phys = pd.as_ptr() as u64;
                // SAFETY: PDPT entries at and above 4 are unused by the boot
                // tables; a not-present entry becomes present, so no TLB
                // entry can be stale, and the CR3 reload below flushes
                // paging-structure caches anyway (SDM Vol. 3A 4.10.4.1).
                unsafe { ptr::write_volatile((pdpt as *mut u64).add(gib as usize), pd_phys | 0x3) };
            }
            // SAFETY: reloading CR3 with its own value only flushes the TLB.
            unsafe { super::cpu::write_cr3(super::cpu::cr3()) };
        }
        Ok(DisplayMemory { base, len })
    }

    /// Bytes of display memory.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the low `bytes` (1..=4) bytes of `v` at `offset`; out of
    /// range writes are dropped.
    pub fn write(&self, offset: u64, bytes: u8, v: u32) {
        if offset.checked_add(u64::from(bytes)).is_none_or(|e| e > self.len) {
            return;
        }
        let p = self.base + offset;
        // SAFETY: inside the display memory this object owns; volatile
        // because it is device memory. Unaligned sizes go byte by byte.
        unsafe {
            match bytes {
                4 if p.is_multiple_of(4) => ptr::write_volatile(p as *mut u32, v),
                2 if p.is_multiple_of(2) => ptr::write_volatile(p as *mut u16, v as u16),
                n => {
                    for i in 0..u64::from(n.min(4)) {
                        ptr::write_volatile((p + i) as *mut u8, (v >> (8 * i)) as u8);
                    }
                }
            }
        }
    }
}

/// Guest RAM as the MMU core reads and writes it (guest page tables, A/D
/// updates, emulated page-table writes).
#[derive(Clone, Copy, Debug)]
pub struct GuestRamView<'a>(pub &'a GuestRam);

impl crate::mmu::GuestMemory for GuestRamView<'_> {
    fn ram_size(&self) -> u64 {
        self.0.size()
    }
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.0.read_u64(gpa)
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        self.0.read_u32(gpa)
    }
    fn write_u64(&mut self, gpa: u64, v: u64) -> Option<()> {
        self.0.write_u64(gpa, v).then_some(())
    }
    fn write_u32(&mut self, gpa: u64, v: u32) -> Option<()> {
        self.0.write_u32(gpa, v).then_some(())
    }
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        self.0.cmpxchg_u64(gpa, old, new)
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<bool> {
        self.0.cmpxchg_u32(gpa, old, new)
    }
}

/// The shadow page pool as the MMU core sees it: frames from a
/// [`FramePool`], and the guest-RAM placement to turn guest frames into
/// host frames for shadow leaves.
#[derive(Debug)]
pub struct ShadowPool {
    frames: FramePool,
    ram_base: u64,
    ram_size: u64,
    remote_flush: fn(crate::mmu::VcpuMask),
}

impl ShadowPool {
    /// Shadow tables in `frames`, guest RAM as `ram` places it;
    /// `remote_flush` performs the core's synchronous remote TLB flushes
    /// ([`crate::mmu::ShadowFrames::flush_remote_tlbs`]).
    pub fn new(frames: FramePool, ram: &GuestRam, remote_flush: fn(crate::mmu::VcpuMask)) -> Self {
        ShadowPool { frames, ram_base: ram.base_hpa(), ram_size: ram.size(), remote_flush }
    }
}

impl crate::mmu::ShadowFrames for ShadowPool {
    fn alloc(&mut self) -> Option<u64> {
        self.frames.alloc()
    }
    fn free(&mut self, hpa: u64) {
        self.frames.free(hpa)
    }
    fn read_spte(&self, hpa: u64, index: usize) -> u64 {
        self.frames.read_entry(hpa, index)
    }
    fn write_spte(&mut self, hpa: u64, index: usize, v: u64) {
        self.frames.write_entry(hpa, index, v)
    }
    fn read_table(&self, hpa: u64, out: &mut [u64; 512]) {
        self.frames.read_table(hpa, out)
    }
    fn gpa_to_hpa(&self, gpa: u64) -> Option<u64> {
        (gpa < self.ram_size).then(|| self.ram_base + gpa)
    }
    fn flush_remote_tlbs(&mut self, vcpus: crate::mmu::VcpuMask) {
        (self.remote_flush)(vcpus)
    }
}
