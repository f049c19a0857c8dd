//! `hv/...`: the Quadrant hypervisor's side of the protocol, seen from the
//! guest. Each check runs only when CPUID leaf 0x4000_0000 carries the
//! Quadrant signature and SKIPs otherwise ("needs the hypervisor"): bare,
//! VMCALL would raise #UD (SDM Vol. 3C 26.1.2: VMCALL outside VMX operation
//! is #UD), so no check here issues one without the signature.

use super::{Check, Ctx};
use crate::hv::{CPUID1_ECX_HYPERVISOR, CPUID1_ECX_VMX};
use crate::report::{Detail, Expect};
use core::fmt::Write;
use shared::hypercall::Hypercall;
use shared::{cpuid, Outcome, PROTOCOL_VERSION};

/// The `hv/...` checks in run order.
pub static CHECKS: &[Check] = &[
    Check { name: "hv/protocol-version", run: protocol_version },
    Check { name: "hv/vmx-hidden", run: vmx_hidden },
];

/// SKIPs unless the signature is there; true when the check may go on.
fn needs_hypervisor(ctx: &Ctx<'_>, d: &mut Detail) -> bool {
    if ctx.signature.is_quadrant() {
        return true;
    }
    let _ = write!(d, "needs the hypervisor (found: {})", ctx.signature);
    false
}

/// The hypervisor speaks our protocol version ([`shared::PROTOCOL_VERSION`]):
/// leaf 0x4000_0000 EAX reaches [`cpuid::LEAF_VERSION`], whose EAX is the
/// version, and the `Version` hypercall (VMCALL with RAX = 1) returns the
/// same. The hypercall is issued only when the CPUID version matches (other
/// versions may number their hypercalls differently).
pub fn protocol_version(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !needs_hypervisor(ctx, d) {
        return Outcome::Skip;
    }
    let max_leaf = ctx.m.cpuid(cpuid::LEAF_SIGNATURE, 0).eax;
    let leaf = (max_leaf >= cpuid::LEAF_VERSION).then(|| ctx.m.cpuid(cpuid::LEAF_VERSION, 0).eax);
    let call = (leaf == Some(PROTOCOL_VERSION)).then(|| ctx.m.vmcall(Hypercall::Version, [0; 3]));
    let mut e = Expect::new(d);
    e.that(
        max_leaf >= cpuid::LEAF_VERSION,
        format_args!("max hypervisor leaf {max_leaf:#x} < {:#x}", cpuid::LEAF_VERSION),
    );
    if let Some(v) = leaf {
        e.that(v == PROTOCOL_VERSION, format_args!("CPUID.40000001h:EAX={v}, expected {PROTOCOL_VERSION}; VMCALL not issued"));
    }
    if let Some(v) = call {
        e.that(v == u64::from(PROTOCOL_VERSION), format_args!("Version hypercall returned {v:#x}, expected {PROTOCOL_VERSION}"));
    }
    e.finish(format_args!("cpuid={leaf:?} vmcall={call:?} ours={PROTOCOL_VERSION}"))
}

/// The hypervisor hides VMX and announces itself: CPUID.1:ECX bit 5 (VMX,
/// SDM Vol. 2A CPUID Table 3-10) reads 0, since the guest cannot use VMX
/// under Quadrant, and bit 31 (which the SDM lists as always 0 on hardware,
/// and hypervisors set by convention) reads 1.
pub fn vmx_hidden(ctx: &mut Ctx<'_>, d: &mut Detail) -> Outcome {
    if !needs_hypervisor(ctx, d) {
        return Outcome::Skip;
    }
    let ecx = ctx.m.cpuid(1, 0).ecx;
    let mut e = Expect::new(d);
    e.that(ecx & CPUID1_ECX_VMX == 0, format_args!("CPUID.1:ECX.VMX[bit 5]=1, expected hidden"));
    e.that(ecx & CPUID1_ECX_HYPERVISOR != 0, format_args!("CPUID.1:ECX[bit 31]=0, expected the hypervisor bit"));
    e.finish(format_args!("cpuid.1:ecx={ecx:#x}"))
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, FAKE_INFO};
    use super::*;
    use crate::report::Tally;

    fn run(m: &mut Fake, f: super::super::CheckFn) -> (Outcome, String) {
        let (mut out, tally) = (String::new(), Tally::new());
        let mut ctx = Ctx::start(m, &mut out, &tally, FAKE_INFO);
        let mut d = Detail::new();
        let o = f(&mut ctx, &mut d);
        (o, d.as_str().to_string())
    }

    #[test]
    fn bare_skips_without_vmcall() {
        let mut m = Fake::bare("");
        assert_eq!(run(&mut m, protocol_version), (Outcome::Skip, "needs the hypervisor (found: other hypervisor 'TCGTCGTCGTCG')".into()));
        assert_eq!(run(&mut m, vmx_hidden).0, Outcome::Skip);
        assert_eq!(m.vmcalls, 0);
    }

    #[test]
    fn version_mismatches() {
        let mut m = Fake::hv("");
        assert_eq!(run(&mut m, protocol_version).0, Outcome::Pass);
        m.hv_version = 7;
        let (o, d) = run(&mut m, protocol_version);
        assert_eq!(o, Outcome::Fail);
        let ours = shared::PROTOCOL_VERSION;
        assert!(d.starts_with(&format!("Version hypercall returned 0x7, expected {ours}")), "{d}");
        let mut m = Fake::hv("");
        m.leaf_4000_0001.eax = ours + 1;
        let calls = m.vmcalls;
        let (o, d) = run(&mut m, protocol_version);
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains(&format!("CPUID.40000001h:EAX={}, expected {ours}; VMCALL not issued", ours + 1)), "{d}");
        assert_eq!(m.vmcalls, calls, "no VMCALL with a foreign version");
    }

    #[test]
    fn vmx_visible_fails() {
        let mut m = Fake::hv("");
        assert_eq!(run(&mut m, vmx_hidden).0, Outcome::Pass);
        m.cpuid1_ecx |= CPUID1_ECX_VMX;
        m.cpuid1_ecx &= !CPUID1_ECX_HYPERVISOR;
        let (o, d) = run(&mut m, vmx_hidden);
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("VMX[bit 5]=1") && d.contains("bit 31]=0"), "{d}");
    }
}
