//! A host model of the memory the MMU core works on: guest RAM and the
//! shadow frame pool as `Vec`s ([`TestMem`], [`TestFrames`]). The host
//! tests' simulated machine and the MMU microbenchmarks (`mmu-bench`,
//! feature `host-model`) build on it.

use super::{GuestMemory, ShadowFrames, VcpuMask};
use alloc::vec::Vec;

/// Shadow frames start here (below 4 GiB, for PAE roots).
pub const POOL_BASE: u64 = 0x0010_0000;
/// Guest RAM appears to the hardware at this host-physical offset.
pub const RAM_HPA: u64 = 0x1_0000_0000;

/// Guest RAM as bytes.
#[derive(Clone, Debug)]
pub struct TestMem {
    /// The bytes (guest-physical 0..len).
    pub ram: Vec<u8>,
}

impl TestMem {
    /// `frames` zeroed 4 KiB frames.
    pub fn new(frames: usize) -> Self {
        TestMem {
            ram: alloc::vec![0; frames * 4096],
        }
    }
    /// Writes 8 bytes (a guest store that did not fault).
    pub fn w64(&mut self, gpa: u64, v: u64) {
        self.ram[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Writes 4 bytes.
    pub fn w32(&mut self, gpa: u64, v: u32) {
        self.ram[gpa as usize..gpa as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Reads 8 bytes (panics outside RAM).
    pub fn r64(&self, gpa: u64) -> u64 {
        self.read_u64(gpa).unwrap()
    }
    /// Plain byte write (a hardware store that did not fault).
    pub fn store(&mut self, gpa: u64, width: u8, value: u64) {
        for i in 0..width as u64 {
            if let Some(b) = self.ram.get_mut((gpa + i) as usize) {
                *b = (value >> (8 * i)) as u8;
            }
        }
    }
}

impl GuestMemory for TestMem {
    fn ram_size(&self) -> u64 {
        self.ram.len() as u64
    }
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let a = usize::try_from(gpa).ok()?;
        self.ram
            .get(a..a.checked_add(8)?)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let a = usize::try_from(gpa).ok()?;
        self.ram
            .get(a..a.checked_add(4)?)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn write_u64(&mut self, gpa: u64, v: u64) -> Option<()> {
        self.read_u64(gpa)?;
        self.w64(gpa, v);
        Some(())
    }
    fn write_u32(&mut self, gpa: u64, v: u32) -> Option<()> {
        self.read_u32(gpa)?;
        self.w32(gpa, v);
        Some(())
    }
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Option<bool> {
        let cur = self.read_u64(gpa)?;
        Some(cur == old && self.write_u64(gpa, new).is_some())
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<bool> {
        let cur = self.read_u32(gpa)?;
        Some(cur == old && self.write_u32(gpa, new).is_some())
    }
}

/// Shadow frames as arrays of entries at host-physical [`POOL_BASE`]..,
/// and guest RAM at host-physical [`RAM_HPA`]...
#[derive(Clone, Debug)]
pub struct TestFrames {
    /// The frames' entries.
    pub frames: Vec<[u64; 512]>,
    /// Frames handed out so far.
    pub next: usize,
    /// Bytes of guest RAM (for `gpa_to_hpa`).
    pub ram_size: u64,
    /// Every `flush_remote_tlbs` request, in order (the host model runs one
    /// vCPU at a time; the tests' world applies them with the returned
    /// flushes).
    pub remote_flushes: Vec<VcpuMask>,
}

impl TestFrames {
    /// `n` zeroed frames for a guest with `ram_size` bytes of RAM.
    pub fn new(n: usize, ram_size: u64) -> Self {
        TestFrames {
            frames: alloc::vec![[0; 512]; n],
            next: 0,
            ram_size,
            remote_flushes: Vec::new(),
        }
    }
    fn slot(&self, hpa: u64) -> usize {
        assert!(
            hpa >= POOL_BASE && hpa & 0xfff == 0,
            "bad shadow frame {hpa:#x}"
        );
        ((hpa - POOL_BASE) >> 12) as usize
    }
}

impl ShadowFrames for TestFrames {
    fn alloc(&mut self) -> Option<u64> {
        if self.next == self.frames.len() {
            return None;
        }
        self.next += 1;
        Some(POOL_BASE + ((self.next as u64 - 1) << 12))
    }
    fn free(&mut self, _hpa: u64) {}
    fn read_spte(&self, hpa: u64, index: usize) -> u64 {
        self.frames[self.slot(hpa)][index]
    }
    fn write_spte(&mut self, hpa: u64, index: usize, v: u64) {
        let s = self.slot(hpa);
        self.frames[s][index] = v;
    }
    fn read_table(&self, hpa: u64, out: &mut [u64; 512]) {
        out.copy_from_slice(&self.frames[self.slot(hpa)][..]);
    }
    fn gpa_to_hpa(&self, gpa: u64) -> Option<u64> {
        (gpa < self.ram_size).then_some(RAM_HPA + gpa)
    }
    fn flush_remote_tlbs(&mut self, vcpus: VcpuMask) {
        self.remote_flushes.push(vcpus);
    }
}

