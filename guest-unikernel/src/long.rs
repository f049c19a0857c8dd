//! 4-level address spaces that the `cache/...` and `long/...` checks build
//! in guest frames while staying in long mode (SDM Vol. 3A 4.5): every PML4
//! they build copies the boot PML4's entry 0 (the identity map of the low
//! 512 GiB the code and stack run in) and maps test pages in the region
//! of PML4 entries 1.. ([`crate::machine::TEST_VA_START`]); data frames
//! carry a tag derived from their physical address, so a read through a
//! mapping says which frame it reached.

use crate::machine::Machine;
use crate::modes::paging::{entry64, Frames, KRW, P};
use crate::pattern::pattern;

/// Seed of the data frames' tags ("LONGCACH").
pub const SEED: u64 = 0x4c4f_4e47_4341_4348;
/// Address bits of a 4-level entry (51:12).
pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Byte offset of the tag in a data frame (the last quadword, so that a
/// data frame later used as a page table holds it in entry 511).
pub const TAG_OFFSET: u64 = 0xff8;
/// Bytes mapped by one 4-level entry at level 1, 2, 3 and 4.
pub const fn span(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// The tag of data frame `frame`, with bit 0 clear (as a PTE: not present).
pub const fn tag(frame: u64) -> u64 {
    pattern(frame, SEED) & !1
}

/// Index of `va` in a table of `level` (1 = PT .. 4 = PML4).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// Why building failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The free RAM ran out.
    NoFrames,
    /// The machine refused a write of a table or tag at this address.
    Refused(u64),
    /// A 2 MiB or 1 GiB page where a table was expected.
    LargePage(u64),
}

/// Builds tables and data frames in free RAM through `scratch_write`.
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    /// The free frames.
    pub frames: Frames,
    /// Entry 0 of the PML4 loaded when the builder started.
    pub entry0: u64,
    /// The CR3 to come back to.
    pub home: u64,
    /// Frames allocated so far.
    pub allocated: u32,
}

impl Builder {
    /// A builder over `frames`, copying entry 0 of the PML4 loaded now.
    pub fn new(m: &mut dyn Machine, frames: Frames) -> Self {
        let home = m.cr3();
        let mut b = [0u8; 8];
        let entry0 = if m.read(home & ADDR, &mut b) { u64::from_le_bytes(b) } else { 0 };
        Builder { frames, entry0, home, allocated: 0 }
    }

    /// Writes one quadword.
    pub fn put(m: &mut dyn Machine, addr: u64, value: u64) -> Result<(), BuildError> {
        if m.scratch_write(addr, value) { Ok(()) } else { Err(BuildError::Refused(addr)) }
    }

    /// A frame, uninitialised.
    pub fn raw(&mut self) -> Result<u64, BuildError> {
        self.allocated += 1;
        self.frames.alloc().ok_or(BuildError::NoFrames)
    }

    /// A zeroed frame.
    pub fn zeroed(&mut self, m: &mut dyn Machine) -> Result<u64, BuildError> {
        let f = self.raw()?;
        for i in 0..512 {
            Self::put(m, f + 8 * i, 0)?;
        }
        Ok(f)
    }

    /// A data frame with its [`tag`] at [`TAG_OFFSET`] (the rest as found).
    pub fn data(&mut self, m: &mut dyn Machine) -> Result<u64, BuildError> {
        let f = self.raw()?;
        Self::put(m, f + TAG_OFFSET, tag(f))?;
        Ok(f)
    }

    /// A zeroed PML4 with the boot identity map in entry 0.
    pub fn pml4(&mut self, m: &mut dyn Machine) -> Result<u64, BuildError> {
        let f = self.zeroed(m)?;
        Self::put(m, f, self.entry0)?;
        Ok(f)
    }

    /// The table of `level` (1..3) on the way to `va` under `pml4`,
    /// created zeroed (and linked supervisor read/write) where missing.
    pub fn table(&mut self, m: &mut dyn Machine, pml4: u64, va: u64, level: u32) -> Result<u64, BuildError> {
        let mut t = pml4;
        for l in (level + 1..=4).rev() {
            let at = t + 8 * index(va, l) as u64;
            let e = m.scratch_read(at).ok_or(BuildError::Refused(at))?;
            t = if e & P != 0 {
                if l < 4 && e & crate::modes::paging::PS != 0 {
                    return Err(BuildError::LargePage(at));
                }
                e & ADDR
            } else {
                let n = self.zeroed(m)?;
                Self::put(m, at, entry64(n, KRW))?;
                n
            };
        }
        Ok(t)
    }

    /// Maps the 4 KiB page `va` to `frame` with `flags` under `pml4`.
    pub fn map(&mut self, m: &mut dyn Machine, pml4: u64, va: u64, frame: u64, flags: u64) -> Result<(), BuildError> {
        let pt = self.table(m, pml4, va, 1)?;
        Self::put(m, pt + 8 * index(va, 1) as u64, entry64(frame, flags))
    }
}

/// What a read through a test mapping gave, when it was not the expected
/// frame's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrong {
    /// The linear address read.
    pub va: u64,
    /// The quadword read (`None`: the machine refused the read).
    pub got: Option<u64>,
    /// The quadword expected.
    pub want: u64,
}

/// Reads the tag word of the page at `va` (4 KiB aligned) and compares it
/// with `frame`'s tag.
pub fn expect_frame(m: &mut dyn Machine, va: u64, frame: u64) -> Result<(), Wrong> {
    expect_word(m, va + TAG_OFFSET, tag(frame))
}

/// Reads the quadword at `va` and compares it with `want`.
pub fn expect_word(m: &mut dyn Machine, va: u64, want: u64) -> Result<(), Wrong> {
    let got = m.linear_read(va);
    if got == Some(want) { Ok(()) } else { Err(Wrong { va, got, want }) }
}

impl core::fmt::Display for Wrong {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.got {
            Some(g) => write!(f, "read {:#x} = {g:#x}, expected {:#x}", self.va, self.want),
            None => write!(f, "read {:#x} refused, expected {:#x}", self.va, self.want),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_tags() {
        let va = crate::machine::TEST_VA_START + 3 * span(3) + 5 * span(2) + 7 * span(1);
        assert_eq!([index(va, 4), index(va, 3), index(va, 2), index(va, 1)], [1, 3, 5, 7]);
        assert_eq!(tag(0x20_0000) & 1, 0);
        assert_ne!(tag(0x20_0000), tag(0x20_1000));
    }
}
