//! The reference walker: the oracle. Written straight from SDM Vol. 3A
//! chapter 4 (4.3 32-bit, 4.4 PAE, 4.5 4-level, 4.6 access rights, 4.7
//! #PF error code, 4.8 A/D flags), independently of `mmu::walk`: one
//! straight-line function per paging mode over a plain byte array, its own
//! register state, its own PDPTE loading; nothing shared with the core.

/// Architectural register state the oracle translates with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefCpu {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// PDPTE registers (PAE paging), loaded by `ref_load_pdptes`.
    pub pdpte: [u64; 4],
    pub maxphyaddr: u32,
}

/// The oracle's verdict on one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefOutcome {
    /// Translated to this physical address.
    Phys(u64),
    /// #PF with this error code.
    PageFault(u32),
    /// A paging structure or the final address lies outside RAM.
    NoRam(u64),
}

fn rd4(ram: &[u8], a: u64) -> Option<u64> {
    let a = a as usize;
    ram.get(a..a + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}
fn rd8(ram: &[u8], a: u64) -> Option<u64> {
    let a = a as usize;
    ram.get(a..a + 8).map(|b| {
        let mut x = [0u8; 8];
        x.copy_from_slice(b);
        u64::from_le_bytes(x)
    })
}
fn wr4(ram: &mut [u8], a: u64, v: u64) {
    ram[a as usize..a as usize + 4].copy_from_slice(&(v as u32).to_le_bytes());
}
fn wr8(ram: &mut [u8], a: u64, v: u64) {
    ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// MOV to CR3 (or enabling PAE paging) loads the PDPTEs; a present one with
/// a reserved bit set (bits 2:1, 8:5, 63:MAXPHYADDR) is #GP (SDM 4.4.1).
/// `None` = #GP; a PDPT outside RAM is also #GP in this project.
pub fn ref_load_pdptes(ram: &[u8], cr3: u64, maxphyaddr: u32) -> Option<[u64; 4]> {
    let mut out = [0u64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let e = rd8(ram, (cr3 & 0xFFFF_FFE0) + i as u64 * 8)?;
        let rsvd =
            (e & 0x6) != 0 || (e & 0x1E0) != 0 || (maxphyaddr < 64 && (e >> maxphyaddr) != 0);
        if e & 1 == 1 && rsvd {
            return None;
        }
        *o = e;
    }
    Some(out)
}

struct Req {
    write: bool,
    user: bool,
    fetch: bool,
}

impl RefCpu {
    fn wp(&self) -> bool {
        self.cr0 >> 16 & 1 == 1
    }
    fn nxe(&self) -> bool {
        self.efer >> 11 & 1 == 1
    }
    fn smep(&self) -> bool {
        self.cr4 >> 20 & 1 == 1
    }
    fn smap(&self) -> bool {
        self.cr4 >> 21 & 1 == 1
    }

    /// SDM 4.7: the error code.
    fn pfec(&self, r: &Req, protection: bool, rsvd: bool, pae_or_long: bool) -> u32 {
        let mut e = 0u32;
        if protection || rsvd {
            e |= 1;
        }
        if r.write {
            e |= 2;
        }
        if r.user {
            e |= 4;
        }
        if rsvd {
            e |= 8;
        }
        if r.fetch && (self.smep() || (pae_or_long && self.nxe())) {
            e |= 16;
        }
        e
    }

    /// SDM 4.6.1: is the access allowed given the combined U/S, R/W and
    /// "execute-disable seen" of the translation? (EFLAGS.AC = 0.)
    fn rights_ok(&self, r: &Req, us: bool, rw: bool, xd: bool) -> bool {
        if r.user {
            if !us {
                return false;
            }
            if r.write {
                return rw;
            }
            if r.fetch {
                return !xd;
            }
            return true;
        }
        // Supervisor-mode access.
        if r.fetch {
            if xd {
                return false;
            }
            return !(us && self.smep());
        }
        if us && self.smap() {
            return false;
        }
        if r.write && self.wp() {
            return rw;
        }
        true
    }

    /// Translate linear address `la`; on success sets A (and D for a write
    /// on the leaf) in `ram` the way the processor does (SDM 4.8).
    pub fn translate(
        &self,
        ram: &mut [u8],
        la: u64,
        write: bool,
        user: bool,
        fetch: bool,
    ) -> RefOutcome {
        let r = Req { write, user, fetch };
        let paging = self.cr0 >> 31 & 1 == 1;
        let pae = self.cr4 >> 5 & 1 == 1;
        let lma = self.efer >> 8 & 1 == 1; // LME with PG=1 means LMA
        let out = if !paging {
            Ok((la & 0xFFFF_FFFF, alloc::vec::Vec::new()))
        } else if !pae {
            self.walk_32bit(ram, la & 0xFFFF_FFFF, &r)
        } else if !lma {
            self.walk_pae(ram, la & 0xFFFF_FFFF, &r)
        } else {
            self.walk_4level(ram, la, &r)
        };
        match out {
            Err(o) => o,
            Ok((phys, updates)) => {
                for (addr, size, val) in updates {
                    if size == 4 {
                        wr4(ram, addr, val)
                    } else {
                        wr8(ram, addr, val)
                    }
                }
                if (phys as usize) < ram.len() {
                    RefOutcome::Phys(phys)
                } else {
                    RefOutcome::NoRam(phys)
                }
            }
        }
    }

    /// SDM 4.3, Figure 4-2 / 4-3, Tables 4-5 / 4-6.
    #[allow(clippy::type_complexity)]
    fn walk_32bit(
        &self,
        ram: &[u8],
        la: u64,
        r: &Req,
    ) -> Result<(u64, alloc::vec::Vec<(u64, u8, u64)>), RefOutcome> {
        let pde_addr = (self.cr3 & 0xFFFF_F000) | ((la >> 22) << 2);
        let pde = rd4(ram, pde_addr).ok_or(RefOutcome::NoRam(pde_addr))?;
        if pde & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, false)));
        }
        let pse = self.cr4 >> 4 & 1 == 1;
        if pse && pde & 0x80 != 0 {
            // 4-MByte page: bits 21:(M-19) reserved (M capped at 40).
            let m = self.maxphyaddr.min(40);
            let mut rsvd = 0u64;
            for b in (m - 19)..=21 {
                rsvd |= 1 << b;
            }
            if pde & rsvd != 0 {
                return Err(RefOutcome::PageFault(self.pfec(r, false, true, false)));
            }
            let us = pde & 4 != 0;
            let rw = pde & 2 != 0;
            if !self.rights_ok(r, us, rw, false) {
                return Err(RefOutcome::PageFault(self.pfec(r, true, false, false)));
            }
            let phys = ((pde >> 13) & 0xFF) << 32 | (pde & 0xFFC0_0000) | (la & 0x3F_FFFF);
            let newv = pde | 0x20 | if r.write { 0x40 } else { 0 };
            return Ok((phys, alloc::vec![(pde_addr, 4, newv)]));
        }
        let pte_addr = (pde & 0xFFFF_F000) | (((la >> 12) & 0x3FF) << 2);
        let pte = rd4(ram, pte_addr).ok_or(RefOutcome::NoRam(pte_addr))?;
        if pte & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, false)));
        }
        let us = pde & pte & 4 != 0;
        let rw = pde & pte & 2 != 0;
        if !self.rights_ok(r, us, rw, false) {
            return Err(RefOutcome::PageFault(self.pfec(r, true, false, false)));
        }
        let phys = (pte & 0xFFFF_F000) | (la & 0xFFF);
        let ups = alloc::vec![
            (pde_addr, 4, pde | 0x20),
            (pte_addr, 4, pte | 0x20 | if r.write { 0x40 } else { 0 })
        ];
        Ok((phys, ups))
    }

    /// Reserved bits of a PAE (Tables 4-9..4-11) or 4-level (4-14..4-19)
    /// entry, given whether it maps a page and its size.
    fn rsvd_64(&self, e: u64, long: bool, what: &str) -> bool {
        let m = self.maxphyaddr;
        let top = if long { 51 } else { 62 };
        let mut mask = 0u64;
        for b in m..=top {
            mask |= 1 << b;
        }
        if !self.nxe() {
            mask |= 1 << 63;
        }
        match what {
            "pml4e" => mask |= 1 << 7,
            "1g" => (13..=29).for_each(|b| mask |= 1 << b),
            "2m" => (13..=20).for_each(|b| mask |= 1 << b),
            _ => {}
        }
        e & mask != 0
    }

    /// SDM 4.4.2: PAE paging with the PDPTE registers.
    #[allow(clippy::type_complexity)]
    fn walk_pae(
        &self,
        ram: &[u8],
        la: u64,
        r: &Req,
    ) -> Result<(u64, alloc::vec::Vec<(u64, u8, u64)>), RefOutcome> {
        let pdpte = self.pdpte[(la >> 30) as usize & 3];
        if pdpte & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
        }
        let nx_on = self.nxe();
        let pde_addr = (pdpte & 0x000F_FFFF_FFFF_F000) + ((la >> 21) & 0x1FF) * 8;
        let pde = rd8(ram, pde_addr).ok_or(RefOutcome::NoRam(pde_addr))?;
        if pde & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
        }
        let big = pde & 0x80 != 0;
        if self.rsvd_64(pde, false, if big { "2m" } else { "pde" }) {
            return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
        }
        if big {
            let xd = nx_on && pde >> 63 == 1;
            if !self.rights_ok(r, pde & 4 != 0, pde & 2 != 0, xd) {
                return Err(RefOutcome::PageFault(self.pfec(r, true, false, true)));
            }
            let phys = (pde & 0x000F_FFFF_FFE0_0000) | (la & 0x1F_FFFF);
            return Ok((
                phys,
                alloc::vec![(pde_addr, 8, pde | 0x20 | if r.write { 0x40 } else { 0 })],
            ));
        }
        let pte_addr = (pde & 0x000F_FFFF_FFFF_F000) + ((la >> 12) & 0x1FF) * 8;
        let pte = rd8(ram, pte_addr).ok_or(RefOutcome::NoRam(pte_addr))?;
        if pte & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
        }
        if self.rsvd_64(pte, false, "pte") {
            return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
        }
        let xd = nx_on && (pde >> 63 == 1 || pte >> 63 == 1);
        if !self.rights_ok(r, pde & pte & 4 != 0, pde & pte & 2 != 0, xd) {
            return Err(RefOutcome::PageFault(self.pfec(r, true, false, true)));
        }
        let phys = (pte & 0x000F_FFFF_FFFF_F000) | (la & 0xFFF);
        Ok((
            phys,
            alloc::vec![
                (pde_addr, 8, pde | 0x20),
                (pte_addr, 8, pte | 0x20 | if r.write { 0x40 } else { 0 })
            ],
        ))
    }

    /// SDM 4.5: 4-level paging, 1-GByte and 2-MByte pages.
    #[allow(clippy::type_complexity)]
    fn walk_4level(
        &self,
        ram: &[u8],
        la: u64,
        r: &Req,
    ) -> Result<(u64, alloc::vec::Vec<(u64, u8, u64)>), RefOutcome> {
        let addr_of = |e: u64| e & 0x000F_FFFF_FFFF_F000;
        let mut seen: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new();
        // PML4E
        let a4 = (self.cr3 & 0x000F_FFFF_FFFF_F000) | (((la >> 39) & 0x1FF) << 3);
        let e4 = rd8(ram, a4).ok_or(RefOutcome::NoRam(a4))?;
        if e4 & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
        }
        if self.rsvd_64(e4, true, "pml4e") {
            return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
        }
        seen.push((a4, e4));
        // PDPTE
        let a3 = addr_of(e4) | (((la >> 30) & 0x1FF) << 3);
        let e3 = rd8(ram, a3).ok_or(RefOutcome::NoRam(a3))?;
        if e3 & 1 == 0 {
            return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
        }
        let phys;
        if e3 & 0x80 != 0 {
            if self.rsvd_64(e3, true, "1g") {
                return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
            }
            seen.push((a3, e3));
            phys = (e3 & 0x000F_FFFF_C000_0000) | (la & 0x3FFF_FFFF);
        } else {
            if self.rsvd_64(e3, true, "pdpte") {
                return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
            }
            seen.push((a3, e3));
            let a2 = addr_of(e3) | (((la >> 21) & 0x1FF) << 3);
            let e2 = rd8(ram, a2).ok_or(RefOutcome::NoRam(a2))?;
            if e2 & 1 == 0 {
                return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
            }
            if e2 & 0x80 != 0 {
                if self.rsvd_64(e2, true, "2m") {
                    return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
                }
                seen.push((a2, e2));
                phys = (e2 & 0x000F_FFFF_FFE0_0000) | (la & 0x1F_FFFF);
            } else {
                if self.rsvd_64(e2, true, "pde") {
                    return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
                }
                seen.push((a2, e2));
                let a1 = addr_of(e2) | (((la >> 12) & 0x1FF) << 3);
                let e1 = rd8(ram, a1).ok_or(RefOutcome::NoRam(a1))?;
                if e1 & 1 == 0 {
                    return Err(RefOutcome::PageFault(self.pfec(r, false, false, true)));
                }
                if self.rsvd_64(e1, true, "pte") {
                    return Err(RefOutcome::PageFault(self.pfec(r, false, true, true)));
                }
                seen.push((a1, e1));
                phys = addr_of(e1) | (la & 0xFFF);
            }
        }
        let us = seen.iter().all(|&(_, e)| e & 4 != 0);
        let rw = seen.iter().all(|&(_, e)| e & 2 != 0);
        let xd = self.nxe() && seen.iter().any(|&(_, e)| e >> 63 == 1);
        if !self.rights_ok(r, us, rw, xd) {
            return Err(RefOutcome::PageFault(self.pfec(r, true, false, true)));
        }
        let n = seen.len();
        let ups = seen
            .iter()
            .enumerate()
            .map(|(i, &(a, e))| {
                (
                    a,
                    8u8,
                    e | 0x20 | if i == n - 1 && r.write { 0x40 } else { 0 },
                )
            })
            .collect();
        Ok((phys, ups))
    }
}
