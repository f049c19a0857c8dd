//! The mode-switch engine: assembly, because stable Rust on this target
//! emits only 64-bit code. A blob of position-independent trampolines,
//! three small probe interpreters (16-bit, 32-bit, 64-bit) and their
//! exception stubs, copied to `layout::BLOB_BASE` (below 1 MiB, so real
//! mode reaches it with CS = 0) and called from Rust as `extern "C" fn()`.
//!
//! One call leaves long mode, runs every stop loaded in the low window
//! (see `guest_unikernel::modes::layout`), and comes back:
//!
//! * leaving IA-32e mode (SDM Vol. 3A 10.8.5.4): far return to a 32-bit
//!   code segment (compatibility mode), clear CR0.PG, clear IA32_EFER.LME;
//!   this is the hub: protected mode without paging, where every stop
//!   starts and ends;
//! * paged stops (SDM Vol. 3A 4.1.2 and 10.9.1): load CR4 (PSE or PAE),
//!   CR3, then CR0 with PG; afterwards clear PG. 32-bit paging -> PAE and
//!   back therefore go through the hub, never through long mode;
//! * long mode with the walk's CR3 (SDM Vol. 3A 10.8.5): CR4.PAE, CR3,
//!   EFER.LME, CR0.PG, far jump to the 64-bit code segment; back as above;
//! * real mode (SDM Vol. 3A 10.9.2): far jump to a 16-bit code segment,
//!   16-bit data segments, LIDT of the IVT, clear CR0.PE, far jump to a
//!   real-mode CS; back (SDM Vol. 3A 10.9.1): LGDT, set CR0.PE, far jump to
//!   the 32-bit code segment, reload the segment registers, LIDT;
//! * the way home (SDM Vol. 3A 10.8.5): restore CR4, CR3 (the boot PML4),
//!   EFER, CR0, far jump to 64-bit code, restore GDTR, IDTR, segments and
//!   the Rust stack.
//!
//! Every interpreter runs ops until the stop's count is used up. The
//! exception stubs (one per vector, 16 bytes apart) push the vector (and a
//! zero where the CPU pushes no error code) and jump to a handler that
//! records vector, error code and CR2 in the op's result slot, puts the
//! stack pointer back where the interpreter was, and goes on with the next
//! op. Interrupts stay disabled (IF = 0) throughout.

mod blob;

use super::console::Console;
use core::fmt::Write;
use guest_unikernel::modes::engine;
use guest_unikernel::modes::layout::{self as l, EngineInfo};

unsafe extern "C" {
    /// The blob's header: length, entry, the three stub tables (offsets).
    static quadrant_modes_blob: [u32; 5];
}

/// The blob's header.
fn info() -> EngineInfo {
    // SAFETY: the header is five initialised, read-only words.
    let h = unsafe { quadrant_modes_blob };
    EngineInfo { len: h[0], entry: h[1], stubs16: h[2], stubs32: h[3], stubs64: h[4] }
}

/// True when `[addr, addr + len)` lies in the low window.
fn in_window(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|end| l::LOW.contains(addr) && end <= l::LOW_END)
}

/// Copies the blob to `BLOB_BASE`.
pub fn install() -> Option<EngineInfo> {
    let e = info();
    if u64::from(e.len) > l::BLOB_MAX {
        return None;
    }
    let src = &raw const quadrant_modes_blob as *const u8;
    // SAFETY: the symbol starts the `e.len`-byte blob the assembly in `blob`
    // defines (the header is its first 20 bytes), read-only data in the
    // image; the destination is the low window, identity-mapped and below
    // the image, where no Rust object lives (the caller checked it is free
    // RAM).
    unsafe { core::ptr::copy_nonoverlapping(src, l::BLOB_BASE as *mut u8, e.len as usize) };
    Some(e)
}

/// Writes into the low window.
pub fn write(addr: u64, bytes: &[u8]) -> bool {
    if !in_window(addr, bytes.len()) {
        return false;
    }
    // SAFETY: inside the identity-mapped low window, where no Rust object
    // lives; the source is a valid slice.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
    true
}

/// Reads the low window.
pub fn read(addr: u64, bytes: &mut [u8]) -> bool {
    if !in_window(addr, bytes.len()) {
        return false;
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        // SAFETY: inside the identity-mapped low window; volatile, because
        // the engine wrote it behind the compiler's back.
        *b = unsafe { ((addr + i as u64) as *const u8).read_volatile() };
    }
    true
}

/// Runs the installed engine when [`engine::vet`] accepts the program in
/// the window; otherwise says why on the console and leaves every result
/// slot as it was ("not run").
///
/// # Safety
/// [`install`] must have copied the blob, and the low window must hold the
/// tables page and a program whose page tables identity-map the window and
/// map the guest image, if at all, at its physical address (so that the
/// vetting of linear write addresses covers it), and whose probes write
/// only into the window and into frames the caller owns: the engine
/// switches modes, loads those tables and executes every op as given.
pub unsafe fn run() {
    if let Err(r) = engine::vet(&mut |a, b| read(a, b), super::phys::image()) {
        let _ = writeln!(Console, "guest: modes: the engine refuses the program in the low window: {r:?}");
        return;
    }
    let entry = l::BLOB_BASE + u64::from(info().entry);
    // SAFETY: the caller vouches for the blob and the program; the entry
    // saves and restores every callee-saved register, RFLAGS, the control
    // registers, EFER, GDTR, IDTR and RSP, as the C ABI requires.
    unsafe {
        let f: extern "C" fn() = core::mem::transmute(entry as usize);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        f();
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}
