//! Translation-failure reports: the one formatter every check that
//! compares a translation with the SDM uses when the comparison fails (the
//! long-mode probe harness of the `long/...` checks, the mode-switch
//! engine's probes, the access sweeps and the cache checks' reads).
//!
//! A report is a few `xlate NAME: ...` lines ([`shared::line::XLATE`]),
//! printed before the check's own line; the runner files them under it:
//!
//! ```text
//! xlate long/large-alias-perms: A1(W=0) write: la 0x8000200010, write at CPL 0: expected #PF ec=0x3 cr2=0x8000200010, got ok 0x3
//! xlate long/large-alias-perms:   guest: 4-level paging, CR3 0x2f3000 (the entries as memory holds them at this report)
//! xlate long/large-alias-perms:     PML4E[1] @0x2f3008 = 0x00000000002f4027 P W U A
//! xlate long/large-alias-perms:     PDPTE[0] @0x2f4000 = 0x00000000002f5027 P W U A
//! xlate long/large-alias-perms:     PDE[1] @0x2f5008 = 0x00000000004000a5 P U A PS
//! xlate long/large-alias-perms:     => 2 MiB page 0x400000, pa 0x400010; over the walk U=1 W=0 XD=0
//! xlate long/large-alias-perms:   shadow: hardware CR3 0x3c5000 (the hypervisor's tables for this vCPU at this report)
//! xlate long/large-alias-perms:     L4[1] @0x3c5008 = 0x00000000003c6027 P W U A; shadow page of gfn 0x2f3 (g4 L4 q0 uwx wp=1 nx=0)
//! ...
//! xlate long/large-alias-perms:     L1[0] @0x3c8000 = 0x8000000000400027 P W U A XD; shadow page of gfn 0x400 (g4 L1 q0 uwx wp=1 nx=0 meta)
//! xlate long/large-alias-perms:     => maps gfn 0x400: pa 0x400010
//! ```
//!
//! The guest walk is read from physical memory when the report is made,
//! the shadow walk asked of the hypervisor then too (`ShadowWalk`
//! hypercall; bare there is none). Checks that report right after the
//! failing access (long mode) show the state of that moment; the engine's
//! reports come after its whole program ran (see
//! [`crate::modes::engine::shadow_walks`]) and say so.

use crate::machine::Machine;
use crate::modes::paging::{self, Format, WalkEnd};
use crate::modes::space::IDENTITY_END;
use core::fmt::{self, Write};
use shared::coverage::RoleValue;
use shared::hypercall::{ShadowWalkRecord, ShadowWalkStatus, NO_GFN, ROLE_PAE_ROOT};

/// Reports per check: the first failures (a sweep can have hundreds).
pub const PER_CHECK: u32 = 3;

/// The paging structures a guest walk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Paging off (real mode, protected mode without paging): linear =
    /// physical, nothing to walk.
    Off,
    /// Paging on: the format and CR3 (for PAE, the PDPTE registers in the format).
    On {
        /// How the tables are laid out.
        format: Format,
        /// CR3.
        cr3: u64,
    },
}

impl Paging {
    /// 4-level paging with `cr3`.
    pub const fn long(cr3: u64) -> Self {
        Paging::On { format: Format::Long, cr3 }
    }
}

/// One failed translation check.
pub struct Failure<'a> {
    /// What the probe was, in the check's own words.
    pub what: &'a dyn fmt::Display,
    /// The linear address accessed.
    pub la: u64,
    /// `read`, `write` or `fetch`.
    pub kind: &'static str,
    /// The privilege level of the access.
    pub cpl: u8,
    /// The expected outcome (value, or fault with error code and CR2).
    pub expected: &'a dyn fmt::Display,
    /// What happened.
    pub got: &'a dyn fmt::Display,
}

/// The shadow side of a report.
#[derive(Clone, Copy, Debug)]
pub enum Shadow {
    /// What the `ShadowWalk` hypercall answered.
    Walked(ShadowWalkRecord),
    /// No hypervisor (a bare run): the processor walks the guest's tables.
    Bare,
    /// Not asked, or no answer; why.
    NotWalked(&'static str),
}

/// Which checks still get a report, and whether a hypervisor can be asked
/// for the shadow side (only with the Quadrant signature and protocol
/// version: bare, VMCALL is #UD).
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    /// The check the reports belong to.
    pub check: &'static str,
    hv: bool,
    left: u32,
}

impl Reporter {
    /// Reports for `check`, [`PER_CHECK`] at most; `hv`: the Quadrant
    /// hypervisor answers hypercalls.
    pub const fn new(check: &'static str, hv: bool) -> Self {
        Reporter { check, hv, left: PER_CHECK }
    }

    /// Reports for the check running now (per `tally`).
    pub fn for_running(tally: &crate::report::Tally) -> Self {
        let check = tally.current().and_then(crate::checks::check_at).map_or("guest/unknown", |c| c.name);
        Reporter::new(check, tally.hypercall_reporting())
    }

    /// True when the Quadrant hypervisor can be asked for shadow walks.
    pub const fn hv(&self) -> bool {
        self.hv
    }

    /// Takes one report from the budget; `false` when it is used up.
    pub fn take(&mut self) -> bool {
        let ok = self.left > 0;
        self.left = self.left.saturating_sub(1);
        ok
    }

    /// Reports `f`, seen just now in long mode with `paging` loaded: the
    /// guest walk and the hypervisor's shadow walk of this moment. Nothing
    /// when the budget is used up.
    pub fn now(&mut self, m: &mut dyn Machine, out: &mut dyn Write, f: &Failure<'_>, paging: Paging) {
        if !self.take() {
            return;
        }
        let shadow = if self.hv {
            m.shadow_walk(f.la).map_or(Shadow::NotWalked("the ShadowWalk hypercall failed"), Shadow::Walked)
        } else {
            Shadow::Bare
        };
        write(out, self.check, f, paging, &shadow, &|a| read_word(&*m, a), "");
    }
}

/// The paging of engine stop `r` for a report made after its program ran,
/// and the words that say when the tables were read (a PAE stop's PDPTEs
/// are read from the PDPT in memory then, not from the registers of the
/// moment).
pub fn stop_paging(m: &dyn Machine, r: &crate::modes::walk::StopRegs) -> (Paging, &'static str) {
    use crate::modes::Mode;
    let (cr3, pse) = (u64::from(r.cr3), u64::from(r.cr4) & crate::regs::CR4_PSE != 0);
    const WHEN: &str = "after the program ran, not at the probe";
    match r.mode {
        Mode::Real | Mode::Prot => (Paging::Off, WHEN),
        Mode::Paging32 => (Paging::On { format: Format::Bits32 { pse }, cr3 }, WHEN),
        Mode::Long => (Paging::long(cr3), WHEN),
        Mode::Pae => {
            let pdptes = [0u64, 1, 2, 3].map(|i| read_word(m, (cr3 & 0xFFFF_FFE0) + 8 * i).unwrap_or(0));
            (Paging::On { format: Format::Pae { pdptes }, cr3 }, "after the program ran, not at the probe; PDPTEs read from the PDPT")
        }
    }
}

/// A 64-bit word of physical memory for the guest walk: only below
/// [`IDENTITY_END`], which every CR3 a report is made under maps (all the
/// suite's tables lie there); `None` elsewhere, so a corrupt entry cannot
/// send the report itself into a fault.
pub fn read_word(m: &dyn Machine, a: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    (a.checked_add(8).is_some_and(|e| e <= IDENTITY_END) && m.read(a, &mut b)).then(|| u64::from_le_bytes(b))
}

/// Name of a paging-structure entry at `level` in `format` (SDM Vol. 3A 4.3-4.5).
fn entry_name(format: Format, level: u8) -> &'static str {
    match (format, level) {
        (Format::Long, 4) => "PML4E",
        (Format::Long | Format::Pae { .. }, 3) => "PDPTE",
        (_, 2) => "PDE",
        (_, 1) => "PTE",
        _ => "entry",
    }
}

/// The flags of an entry, by name (`wide`: a 64-bit entry, with XD);
/// `not present` first when P is clear.
struct Flags(u64, bool);
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u64, &str); 9] =
            [(1, "P"), (2, "W"), (4, "U"), (8, "PWT"), (0x10, "PCD"), (0x20, "A"), (0x40, "D"), (0x80, "PS"), (0x100, "G")];
        let mut first = self.0 & 1 != 0;
        if !first {
            f.write_str("not present")?;
        }
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                f.write_str(if first { "" } else { " " })?;
                f.write_str(name)?;
                first = false;
            }
        }
        if self.1 && self.0 & (1 << 63) != 0 {
            f.write_str(if first { "XD" } else { " XD" })?;
        }
        Ok(())
    }
}

/// A paging format in words.
fn format_name(format: Format) -> &'static str {
    match format {
        Format::Bits32 { pse: true } => "32-bit paging (CR4.PSE=1)",
        Format::Bits32 { pse: false } => "32-bit paging (CR4.PSE=0)",
        Format::Pae { .. } => "PAE paging",
        Format::Long => "4-level paging",
    }
}

/// Writes a report: the failure, the guest walk of `paging` (entries read
/// through `word`), the shadow walk. `when` (possibly empty) is added to
/// the headings to say when the tables were read.
pub fn write(
    out: &mut dyn Write,
    check: &str,
    f: &Failure<'_>,
    paging: Paging,
    shadow: &Shadow,
    word: &dyn Fn(u64) -> Option<u64>,
    when: &str,
) {
    let mut line = |args: fmt::Arguments<'_>| {
        let _ = shared::line::write_xlate(&mut &mut *out, check, args);
        let _ = out.write_char('\n');
    };
    line(format_args!(
        "{}: la {:#x}, {} at CPL {}: expected {}, got {}",
        f.what, f.la, f.kind, f.cpl, f.expected, f.got
    ));
    let when = if when.is_empty() { "at this report" } else { when };
    match paging {
        Paging::Off => line(format_args!("  guest: paging off, la {:#x} is pa {:#x}", f.la, f.la)),
        Paging::On { format, cr3 } => {
            let wide = !matches!(format, Format::Bits32 { .. });
            line(format_args!("  guest: {}, CR3 {cr3:#x} (the entries as memory holds them {when})", format_name(format)));
            let w = paging::walk(word, format, cr3, f.la);
            let (mut u, mut rw, mut xd) = (true, true, false);
            for e in w.entries() {
                let name = entry_name(format, e.level);
                match e.at {
                    Some(at) => {
                        u &= e.value & 4 != 0;
                        rw &= e.value & 2 != 0;
                        line(format_args!("    {name}[{}] @{at:#x} = {:#018x} {}", e.index, e.value, Flags(e.value, wide)));
                    }
                    None => line(format_args!("    {name}[{}] (PDPTE register) = {:#018x} {}", e.index, e.value, Flags(e.value, wide))),
                }
                xd |= wide && e.value & (1 << 63) != 0;
            }
            match w.end {
                WalkEnd::Page { base, size, pa } => {
                    let size = match size {
                        0x1000 => "4 KiB",
                        0x20_0000 => "2 MiB",
                        0x40_0000 => "4 MiB",
                        _ => "1 GiB",
                    };
                    let xd = if wide { if xd { " XD=1" } else { " XD=0" } } else { "" };
                    line(format_args!(
                        "    => {size} page {base:#x}, pa {pa:#x}; over the walk U={} W={}{xd}",
                        u8::from(u),
                        u8::from(rw)
                    ));
                }
                WalkEnd::NotPresent => {
                    let last = w.entries().last().map_or("the first entry", |e| entry_name(format, e.level));
                    line(format_args!("    => not present at the {last}"));
                }
                WalkEnd::Unreadable(at) => line(format_args!("    => the entry at {at:#x} is not read (outside the low {} MiB)", IDENTITY_END >> 20)),
            }
        }
    }
    match shadow {
        Shadow::Bare => line(format_args!("  shadow: none (bare: no hypervisor; the processor walks the guest's tables)")),
        Shadow::NotWalked(why) => line(format_args!("  shadow: not walked ({why})")),
        Shadow::Walked(r) => match ShadowWalkStatus::from_u32(r.status) {
            Some(ShadowWalkStatus::NoShadow) => {
                line(format_args!("  shadow: none (mmu=ept: the processor walks the guest's own tables through EPT)"))
            }
            Some(ShadowWalkStatus::NoRoot) => line(format_args!("  shadow: the vCPU has no root loaded")),
            None => line(format_args!("  shadow: unknown ShadowWalk status {}", r.status)),
            Some(ShadowWalkStatus::Walked) => {
                line(format_args!("  shadow: hardware CR3 {:#x} (the hypervisor's tables for this vCPU {when})", r.root));
                for e in r.walked() {
                    let at = e.table + 8 * u64::from(e.index);
                    if e.role == ROLE_PAE_ROOT {
                        line(format_args!("    L{}[{}] @{at:#x} = {:#018x} {}; the PAE root", e.level, e.index, e.value, Flags(e.value, true)));
                    } else {
                        line(format_args!(
                            "    L{}[{}] @{at:#x} = {:#018x} {}; shadow page of gfn {:#x} ({})",
                            e.level,
                            e.index,
                            e.value,
                            Flags(e.value, true),
                            e.gfn,
                            RoleValue::unpack(e.role)
                        ));
                    }
                }
                match r.walked().last() {
                    None => line(format_args!("    => no entries")),
                    Some(_) if r.leaf_gfn != NO_GFN => {
                        line(format_args!("    => maps gfn {:#x}: pa {:#x}", r.leaf_gfn, (r.leaf_gfn << 12) | (f.la & 0xFFF)))
                    }
                    Some(e) if e.value & 1 == 0 => {
                        line(format_args!("    => not present at L{}: the next access there exits to the hypervisor", e.level))
                    }
                    Some(e) => line(format_args!("    => ends at L{} (no PT entry)", e.level)),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::hypercall::ShadowEntry;
    use std::collections::HashMap;

    fn lines(out: &str) -> Vec<&str> {
        out.lines().collect()
    }

    #[test]
    fn a_long_mode_report_lists_both_walks() {
        // PML4 0x10000: [1] -> PDPT 0x11000: [0] -> PD 0x12000: [1] a
        // read-only 2 MiB page at 0x400000.
        let mem: HashMap<u64, u64> = [(0x10008, 0x11027), (0x11000, 0x12027), (0x12008, 0x4000a5)].into();
        let word = |a: u64| Some(mem.get(&a).copied().unwrap_or(0));
        let mut r = ShadowWalkRecord::new(ShadowWalkStatus::Walked, 0x80_0020_0010, 0x3c_5000);
        let role = |level| RoleValue { glevels: 4, level, access: 7, cr0_wp: true, ..RoleValue::default() }.pack();
        r.push(ShadowEntry { value: 0x3c_6027, table: 0x3c_5000, gfn: 0x10, role: role(4), level: 4, index: 1 });
        r.push(ShadowEntry { value: 0, table: 0x3c_6000, gfn: 0x11, role: role(3), level: 3, index: 0 });
        let f = Failure {
            what: &"A1(W=0) write",
            la: 0x80_0020_0010,
            kind: "write",
            cpl: 0,
            expected: &"#PF ec=0x3 cr2=0x8000200010",
            got: &"ok 0x3",
        };
        let mut out = String::new();
        write(&mut out, "long/x", &f, Paging::long(0x10000), &Shadow::Walked(r), &word, "");
        assert_eq!(
            lines(&out),
            [
                "xlate long/x: A1(W=0) write: la 0x8000200010, write at CPL 0: expected #PF ec=0x3 cr2=0x8000200010, got ok 0x3",
                "xlate long/x:   guest: 4-level paging, CR3 0x10000 (the entries as memory holds them at this report)",
                "xlate long/x:     PML4E[1] @0x10008 = 0x0000000000011027 P W U A",
                "xlate long/x:     PDPTE[0] @0x11000 = 0x0000000000012027 P W U A",
                "xlate long/x:     PDE[1] @0x12008 = 0x00000000004000a5 P U A PS",
                "xlate long/x:     => 2 MiB page 0x400000, pa 0x400010; over the walk U=1 W=0 XD=0",
                "xlate long/x:   shadow: hardware CR3 0x3c5000 (the hypervisor's tables for this vCPU at this report)",
                "xlate long/x:     L4[1] @0x3c5008 = 0x00000000003c6027 P W U A; shadow page of gfn 0x10 (g4 L4 q0 uwx wp=1 nx=0)",
                "xlate long/x:     L3[0] @0x3c6000 = 0x0000000000000000 not present; shadow page of gfn 0x11 (g4 L3 q0 uwx wp=1 nx=0)",
                "xlate long/x:     => not present at L3: the next access there exits to the hypervisor",
            ]
        );
        for l in lines(&out) {
            assert!(matches!(shared::line::parse(l), Some(shared::line::Line::Xlate { name: "long/x", .. })), "{l}");
        }
    }

    #[test]
    fn pae_32_bit_bare_ept_and_leaf_forms() {
        let mem: HashMap<u64, u64> = [(0x20000 + 8 * 2, (1 << 63) | 0x21023), (0x21000 + 8 * 3, 0x5063)].into();
        let word = |a: u64| Some(mem.get(&a).copied().unwrap_or(0));
        let pae = Paging::On { format: Format::Pae { pdptes: [0, 0x20001, 0, 0] }, cr3: 0x1fe0 };
        let la = (1 << 30) | (2 << 21) | (3 << 12) | 0x44;
        let f = Failure { what: &"probe 7 read32", la, kind: "read", cpl: 0, expected: &"value 0x1", got: &"value 0x2" };
        let mut r = ShadowWalkRecord::new(ShadowWalkStatus::Walked, la, 0x9000);
        r.push(ShadowEntry { value: 0x5001, table: 0x9000, gfn: 0, role: ROLE_PAE_ROOT, level: 3, index: 1 });
        r.leaf_gfn = 0x5;
        let mut out = String::new();
        write(&mut out, "modes/x", &f, pae, &Shadow::Walked(r), &word, "after the program");
        let l = lines(&out);
        assert_eq!(l[1], "xlate modes/x:   guest: PAE paging, CR3 0x1fe0 (the entries as memory holds them after the program)");
        assert_eq!(l[2], "xlate modes/x:     PDPTE[1] (PDPTE register) = 0x0000000000020001 P");
        assert_eq!(l[3], "xlate modes/x:     PDE[2] @0x20010 = 0x8000000000021023 P W A XD");
        assert_eq!(l[4], "xlate modes/x:     PTE[3] @0x21018 = 0x0000000000005063 P W A D");
        assert_eq!(l[5], "xlate modes/x:     => 4 KiB page 0x5000, pa 0x5044; over the walk U=0 W=1 XD=1");
        assert_eq!(l[7], "xlate modes/x:     L3[1] @0x9008 = 0x0000000000005001 P; the PAE root");
        assert_eq!(l[8], "xlate modes/x:     => maps gfn 0x5: pa 0x5044");
        // 32-bit, not present; bare; EPT; no answer.
        let f32 = Paging::On { format: Format::Bits32 { pse: true }, cr3: 0x30000 };
        for (shadow, want) in [
            (Shadow::Bare, "  shadow: none (bare: no hypervisor; the processor walks the guest's tables)"),
            (Shadow::Walked(ShadowWalkRecord::new(ShadowWalkStatus::NoShadow, 0, 0)), "  shadow: none (mmu=ept: the processor walks the guest's own tables through EPT)"),
            (Shadow::NotWalked("real mode"), "  shadow: not walked (real mode)"),
        ] {
            let mut out = String::new();
            write(&mut out, "pg32/x", &f, f32, &shadow, &word, "");
            let l = lines(&out);
            assert_eq!(l[2], "xlate pg32/x:     PDE[257] @0x30404 = 0x0000000000000000 not present");
            assert_eq!(l[3], "xlate pg32/x:     => not present at the PDE");
            assert_eq!(l[4], format!("xlate pg32/x: {want}"));
        }
        let mut out = String::new();
        write(&mut out, "modes/r", &f, Paging::Off, &Shadow::NotWalked("real mode"), &word, "");
        assert_eq!(lines(&out)[1], format!("xlate modes/r:   guest: paging off, la {la:#x} is pa {la:#x}"));
    }

    #[test]
    fn the_budget_and_the_reader_limit() {
        let mut r = Reporter::new("a/b", false);
        assert!((0..PER_CHECK).all(|_| r.take()));
        assert!(!r.take() && !r.take());
        let m = crate::checks::fake::Fake::bare("");
        assert_eq!(read_word(&m, IDENTITY_END), None);
        assert_eq!(read_word(&m, 0x20_0000), Some(0));
    }
}
