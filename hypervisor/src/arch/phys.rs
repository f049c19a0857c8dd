//! Raw physical memory: the one module that turns physical addresses into
//! pointers. The boot code identity-maps the low 4 GiB (bare-rt), so a
//! physical address below 4 GiB is also its linear address.
//!
//! Two owners of memory regions are built here and handed out as safe
//! objects: [`GuestRam`] (the host region that backs guest-physical
//! 0..size) and [`FramePool`] (4 KiB frames for page tables the CPU walks:
//! the hypervisor's shadow tables and VMX regions). Both bounds-check every
//! access, so code above this module needs no `unsafe` for memory.

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
    fn gpa_to_hpa(&self, gpa: u64) -> Option<u64> {
        (gpa < self.ram_size).then(|| self.ram_base + gpa)
    }
    fn flush_remote_tlbs(&mut self, vcpus: crate::mmu::VcpuMask) {
        (self.remote_flush)(vcpus)
    }
}
