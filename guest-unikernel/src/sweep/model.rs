//! The access sweep's model of the SDM: for one case (the flags of a PDE
//! and a PTE, CR0.WP, IA32_EFER.NXE, CR4.SMEP/SMAP, CPL and the kind of
//! access) the architectural outcome, written straight from SDM Vol. 3A
//! 4.6.1 (access rights), 4.7 (#PF error code) and 4.8 (accessed and
//! dirty flags). Every entry above the PDE is present, writable, user and
//! accessed, so the PDE and the PTE (or the large PDE alone) decide.
//!
//! What the SDM leaves open is left unchecked: whether a walk that ends in
//! a fault sets accessed flags (4.8 only says the processor sets A in an
//! entry it *uses*), and D in a PDE that references a page table (bit 6 is
//! ignored there, Table 4-17).

use core::fmt;

/// Compact flag bits of a case's entries (not the entry layout): see
/// [`entry_bits`].
pub mod f {
    /// U/S.
    pub const U: u8 = 1 << 0;
    /// R/W.
    pub const W: u8 = 1 << 1;
    /// XD (bit 63; PAE and 4-level paging only).
    pub const NX: u8 = 1 << 2;
    /// A.
    pub const A: u8 = 1 << 3;
    /// D (leaf entries: the PTE, or a PDE with PS=1).
    pub const D: u8 = 1 << 4;
    /// PS (PDE only): the PDE maps a 2 MiB (4 MiB in 32-bit paging) page.
    pub const PS: u8 = 1 << 5;
}

/// The paging mode (SDM Vol. 3A 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 32-bit paging (CR4.PAE=0): no XD bit.
    Pg32,
    /// PAE paging.
    Pae,
    /// 4-level paging.
    Long,
}

impl Mode {
    /// The name used in check names and mismatch text.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Pg32 => "pg32",
            Mode::Pae => "pae",
            Mode::Long => "long",
        }
    }

    /// Entries have an XD bit (bit 63) that is reserved with NXE=0.
    pub const fn has_xd(self) -> bool {
        !matches!(self, Mode::Pg32)
    }
}

/// The kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

impl Access {
    /// All three, in enumeration order.
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Fetch];
}

/// One case of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The paging mode.
    pub mode: Mode,
    /// The PDE's flags ([`f`]).
    pub pde: u8,
    /// The PTE's flags ([`f`]; unused when the PDE has PS).
    pub pte: u8,
    /// CR0.WP.
    pub wp: bool,
    /// IA32_EFER.NXE.
    pub nxe: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP (EFLAGS.AC is 0 throughout the sweep).
    pub smap: bool,
    /// CPL 3 (else CPL 0).
    pub user: bool,
    /// The access.
    pub acc: Access,
}

/// #PF error code bits (SDM Vol. 3A 4.7, Figure 4-12).
pub mod ec {
    /// P: protection violation or reserved bit (0: not present).
    pub const P: u32 = 1 << 0;
    /// W/R: a write.
    pub const W: u32 = 1 << 1;
    /// U/S: a user-mode access.
    pub const U: u32 = 1 << 2;
    /// RSVD: a reserved bit set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// I/D: an instruction fetch (only with SMEP=1, or PAE/4-level with NXE=1).
    pub const I: u32 = 1 << 4;
}

/// What an entry must look like afterwards, as masks of [`f`] bits: `set`
/// must be 1, `clear` must be 0, the rest is not determined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct After {
    /// Bits that must be 1.
    pub set: u8,
    /// Bits that must be 0.
    pub clear: u8,
}

impl After {
    /// True when `flags` (the entry's [`f`] bits afterwards) satisfy this.
    pub const fn holds(self, flags: u8) -> bool {
        flags & self.set == self.set && flags & self.clear == 0
    }
}

/// The architectural outcome of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `None`: the access completes; `Some(ec)`: #PF with this error code
    /// (CR2 = the accessed address).
    pub fault: Option<u32>,
    /// The PDE's A/D afterwards.
    pub pde: After,
    /// The PTE's A/D afterwards (nothing when the PDE has PS).
    pub pte: After,
}

impl Case {
    /// The PDE maps the page itself.
    pub const fn large(&self) -> bool {
        self.pde & f::PS != 0
    }

    /// The flags of the entry that maps the page (the PTE, or the large PDE).
    pub const fn leaf(&self) -> u8 {
        if self.large() { self.pde } else { self.pte }
    }

    /// The architectural outcome (SDM Vol. 3A 4.6.1, 4.7, 4.8).
    pub fn outcome(&self) -> Outcome {
        let large = self.large();
        // The entries the walk uses: the PDE, then the PTE unless PS.
        let entries: &[u8] = if large { &[self.pde] } else { &[self.pde, self.pte] };
        let write = self.acc == Access::Write;
        let fetch = self.acc == Access::Fetch;
        // 4.7: I/D is 1 for a fetch when SMEP=1, or with PAE/4-level paging and NXE=1.
        let id = fetch && (self.smep || (self.mode.has_xd() && self.nxe));
        let code = |p_rsvd: u32| {
            p_rsvd | if write { ec::W } else { 0 } | if self.user { ec::U } else { 0 } | if id { ec::I } else { 0 }
        };
        // 4.5.4/4.4.2 (Tables 4-11, 4-17..4-19): with NXE=0 bit 63 is reserved; a
        // reserved bit in any entry used is a fault with RSVD=1 and P=1 (4.7).
        let rsvd = self.mode.has_xd() && !self.nxe && entries.iter().any(|&e| e & f::NX != 0);
        let fault = if rsvd {
            Some(code(ec::P | ec::RSVD))
        } else if !self.allowed(entries) {
            Some(code(ec::P))
        } else {
            None
        };
        // 4.8: a completed access sets A in every entry it used and, for a
        // write, D in the leaf; without a write D stays as it was. The
        // processor never clears A or D.
        let (pde0, pte0) = (self.pde & (f::A | f::D), self.pte & (f::A | f::D));
        let mut pde = After { set: pde0 & f::A, clear: 0 };
        let mut pte = if large { After::default() } else { After { set: pte0, clear: 0 } };
        if large {
            pde.set |= pde0 & f::D;
        }
        let leaf = if large { &mut pde } else { &mut pte };
        if fault.is_none() {
            leaf.set |= f::A;
            if write {
                leaf.set |= f::D;
            } else if self.leaf() & f::D == 0 {
                leaf.clear |= f::D;
            }
            if !large {
                pde.set |= f::A;
            }
        } else if self.leaf() & f::D == 0 {
            // 4.8: D is set on a write to the page; a faulting access wrote nothing.
            leaf.clear |= f::D;
        }
        Outcome { fault, pde, pte }
    }

    /// SDM Vol. 3A 4.6.1: the access is allowed by the combined rights of
    /// `entries` (U and W are ANDed, XD ORed, over all levels; the levels
    /// above the PDE allow everything).
    fn allowed(&self, entries: &[u8]) -> bool {
        let all = |b: u8| entries.iter().all(|&e| e & b != 0);
        let user_page = all(f::U);
        let writable = all(f::W);
        let xd = self.mode.has_xd() && self.nxe && entries.iter().any(|&e| e & f::NX != 0);
        match (self.user, self.acc) {
            // User-mode accesses: only user-mode addresses.
            (true, Access::Read) => user_page,
            (true, Access::Write) => user_page && writable,
            (true, Access::Fetch) => user_page && !xd,
            // Supervisor-mode accesses (explicit, EFLAGS.AC=0).
            (false, Access::Read) => !(user_page && self.smap),
            (false, Access::Write) => !(user_page && self.smap) && (writable || !self.wp),
            (false, Access::Fetch) => !(xd || user_page && self.smep),
        }
    }
}

impl fmt::Display for Case {
    /// `long pde=UWxAs pte=uWxaD wp1 nxe1 smep0 smap0 cpl3 write`: each
    /// entry's flags U, W, X (XD; not in 32-bit paging), A, D (leaf only),
    /// S (PS; PDE only), upper case when set, lower case when clear.
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let xd = self.mode.has_xd();
        let bits = |fm: &mut fmt::Formatter<'_>, e: u8, pde: bool| {
            for (b, n) in [(f::U, 'u'), (f::W, 'w'), (f::NX, 'x'), (f::A, 'a'), (f::D, 'd'), (f::PS, 's')] {
                let shown = match b {
                    f::NX => xd,
                    f::D => !pde || e & f::PS != 0,
                    f::PS => pde,
                    _ => true,
                };
                if shown {
                    write!(fm, "{}", if e & b != 0 { n.to_ascii_uppercase() } else { n })?;
                }
            }
            Ok(())
        };
        write!(fm, "{} pde=", self.mode.name())?;
        bits(fm, self.pde, true)?;
        if !self.large() {
            write!(fm, " pte=")?;
            bits(fm, self.pte, false)?;
        }
        write!(
            fm,
            " wp{} nxe{} smep{} smap{} cpl{} {}",
            u8::from(self.wp),
            u8::from(self.nxe),
            u8::from(self.smep),
            u8::from(self.smap),
            if self.user { 3 } else { 0 },
            match self.acc {
                Access::Read => "read",
                Access::Write => "write",
                Access::Fetch => "fetch",
            }
        )
    }
}

/// The entry bits (PAE/4-level layout; the 32-bit layout agrees below bit
/// 12 and has no bit 63) of the [`f`] flags `e`, present.
pub const fn entry_bits(e: u8) -> u64 {
    let mut v = 1; // P
    if e & f::W != 0 {
        v |= 1 << 1;
    }
    if e & f::U != 0 {
        v |= 1 << 2;
    }
    if e & f::A != 0 {
        v |= 1 << 5;
    }
    if e & f::D != 0 {
        v |= 1 << 6;
    }
    if e & f::PS != 0 {
        v |= 1 << 7;
    }
    if e & f::NX != 0 {
        v |= 1 << 63;
    }
    v
}

/// The A and D [`f`] bits of entry word `v`.
pub const fn ad_of(v: u64) -> u8 {
    (if v & (1 << 5) != 0 { f::A } else { 0 }) | (if v & (1 << 6) != 0 { f::D } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::f::*;
    use super::*;

    fn case(mode: Mode, pde: u8, pte: u8, user: bool, acc: Access) -> Case {
        Case { mode, pde, pte, wp: true, nxe: true, smep: false, smap: false, user, acc }
    }
    const ALLOW: u8 = U | W | A;

    #[test]
    fn sdm_examples_access_rights() {
        use Access::*;
        let m = Mode::Long;
        // All permissive: everything completes, A set everywhere, D on write.
        let o = case(m, ALLOW, ALLOW, true, Write).outcome();
        assert_eq!(o.fault, None);
        assert!(o.pte.holds(A | D) && !o.pte.holds(A));
        assert_eq!(o.pte.set, A | D);
        // 4.6.1: W=0 in the PDE makes the page read-only for users (0x7) and,
        // with WP=1, for the supervisor (0x3); with WP=0 supervisor writes pass.
        assert_eq!(case(m, U | A, ALLOW, true, Write).outcome().fault, Some(0x7));
        assert_eq!(case(m, U | A, ALLOW, false, Write).outcome().fault, Some(0x3));
        let mut c = case(m, U | A, ALLOW, false, Write);
        c.wp = false;
        assert_eq!(c.outcome().fault, None);
        // U=0 in the PTE: user read 0x5, user fetch 0x15 (NXE=1), supervisor fine.
        assert_eq!(case(m, ALLOW, W | A, true, Read).outcome().fault, Some(0x5));
        assert_eq!(case(m, ALLOW, W | A, true, Fetch).outcome().fault, Some(0x15));
        assert_eq!(case(m, ALLOW, W | A, false, Fetch).outcome().fault, None);
        // XD in the PDE with NXE=1: fetches fault 0x11 / 0x15, reads pass.
        assert_eq!(case(m, ALLOW | NX, ALLOW, false, Fetch).outcome().fault, Some(0x11));
        assert_eq!(case(m, ALLOW | NX, ALLOW, true, Fetch).outcome().fault, Some(0x15));
        assert_eq!(case(m, ALLOW | NX, ALLOW, true, Read).outcome().fault, None);
        // XD with NXE=0 is a reserved bit (0x9 | W | U), and I/D is 0 then (4.7).
        let mut c = case(m, ALLOW, ALLOW | NX, true, Fetch);
        c.nxe = false;
        assert_eq!(c.outcome().fault, Some(0xd));
        c.acc = Write;
        assert_eq!(c.outcome().fault, Some(0xf));
        // A fetch fault with NXE=0 and SMEP=0 has I/D=0 (4.7); with SMEP=1 it has I/D=1.
        let mut c = case(m, U | W | A, W | A, true, Fetch);
        c.nxe = false;
        assert_eq!(c.outcome().fault, Some(0x5));
        c.smep = true;
        assert_eq!(c.outcome().fault, Some(0x15));
        // 32-bit paging: bit 63 does not exist and I/D needs SMEP.
        let mut c = case(Mode::Pg32, ALLOW, W | A, true, Fetch);
        assert_eq!(c.outcome().fault, Some(0x5));
        c.smep = true;
        assert_eq!(c.outcome().fault, Some(0x15));
    }

    #[test]
    fn smep_and_smap() {
        use Access::*;
        let mut c = case(Mode::Long, ALLOW, ALLOW, false, Fetch);
        c.smep = true;
        assert_eq!(c.outcome().fault, Some(ec::P | ec::I));
        c.acc = Read;
        assert_eq!(c.outcome().fault, None, "SMEP does not restrict data accesses");
        c.smap = true;
        assert_eq!(c.outcome().fault, Some(ec::P));
        c.acc = Write;
        assert_eq!(c.outcome().fault, Some(ec::P | ec::W));
        // A supervisor page (U=0 at one level) is untouched by SMEP/SMAP.
        c.pte = W | A;
        assert_eq!(c.outcome().fault, None);
        c.acc = Fetch;
        assert_eq!(c.outcome().fault, None);
        // SMAP with WP=0 still forbids supervisor writes to user pages.
        let mut c = case(Mode::Pae, ALLOW, U | A, false, Write);
        c.wp = false;
        assert_eq!(c.outcome().fault, None);
        c.smap = true;
        assert_eq!(c.outcome().fault, Some(ec::P | ec::W));
    }

    #[test]
    fn accessed_and_dirty() {
        use Access::*;
        // 4 KiB read: A in PDE and PTE, D stays 0.
        let o = case(Mode::Long, U | W, U | W, false, Read).outcome();
        assert_eq!((o.pde, o.pte), (After { set: A, clear: 0 }, After { set: A, clear: D }));
        // Large write: A and D in the PDE, nothing about a PTE.
        let o = case(Mode::Long, U | W | PS, 0, false, Write).outcome();
        assert_eq!((o.fault, o.pde, o.pte), (None, After { set: A | D, clear: 0 }, After::default()));
        // A faulting write leaves D clear; A is not determined (except bits already set).
        let o = case(Mode::Long, U | A, U | W, true, Write).outcome();
        assert_eq!((o.pde, o.pte), (After { set: A, clear: 0 }, After { set: 0, clear: D }));
        // D already set stays set.
        let o = case(Mode::Long, U | W, U | W | D, true, Read).outcome();
        assert_eq!(o.pte, After { set: A | D, clear: 0 });
        // An entry image round-trips its A/D.
        assert_eq!(ad_of(entry_bits(A | D | U)), A | D);
        assert_eq!(entry_bits(NX | PS) , 1 | 1 << 7 | 1 << 63);
    }

    #[test]
    fn display_names_every_dimension() {
        let mut c = case(Mode::Long, U | W | A, U | D, true, Access::Fetch);
        c.smap = true;
        assert_eq!(c.to_string(), "long pde=UWxAs pte=UwxaD wp1 nxe1 smep0 smap1 cpl3 fetch");
        let c = case(Mode::Pg32, U | PS | D, 0, false, Access::Read);
        assert_eq!(c.to_string(), "pg32 pde=UwaDS wp1 nxe1 smep0 smap0 cpl0 read");
    }
}
