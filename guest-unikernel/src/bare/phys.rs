//! Physical memory as the guest reaches it: bare-rt's page tables identity-
//! map the low 4 GiB, so a physical address below 4 GiB is a pointer. Reads
//! copy bytes out (the Multiboot structures are never referenced in place);
//! writes go only to scratch RAM above the guest image, which no Rust
//! object occupies.
//!
//! With `cpu`, this is one of the two modules of the binary that contain
//! `unsafe` code.

use guest_unikernel::machine::Range;

/// End of the identity map.
const MAPPED_END: u64 = 1 << 32;

unsafe extern "C" {
    /// First byte of the loaded image (bare-rt's linker script).
    static __load_start: u8;
    /// One past the image's .bss (stack and page tables included).
    static __image_end: u8;
}

/// The guest image `[__load_start, __image_end)`.
pub fn image() -> Range {
    Range::new(&raw const __load_start as u64, &raw const __image_end as u64)
}

/// The physical address of a guest object (identity map).
pub fn phys_addr<T>(r: &T) -> u64 {
    r as *const T as u64
}

/// Copies `buf.len()` bytes from physical `addr`; `false` when the range is
/// not inside `[1, 4 GiB)` (address 0 would be a null pointer).
pub fn read(addr: u64, buf: &mut [u8]) -> bool {
    let Some(end) = addr.checked_add(buf.len() as u64) else { return false };
    if addr == 0 || end > MAPPED_END {
        return false;
    }
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: the address is identity-mapped (below 4 GiB, not null);
        // a volatile byte read of RAM or firmware memory has no side effects
        // and creates no reference.
        *b = unsafe { ((addr + i as u64) as *const u8).read_volatile() };
    }
    true
}

/// True when a 64-bit word at `addr` is scratch RAM: aligned, above the
/// guest image, inside the identity map.
fn scratch(addr: u64) -> bool {
    addr.is_multiple_of(8) && addr >= image().end && addr.checked_add(8).is_some_and(|e| e <= MAPPED_END)
}

/// Writes a word of scratch RAM; `false` (nothing written) outside it.
/// What lies above the image is for the caller to know (the RAM test plans
/// from the memory map); no Rust object lives there.
pub fn scratch_write(addr: u64, value: u64) -> bool {
    if !scratch(addr) {
        return false;
    }
    // SAFETY: identity-mapped, aligned and above the image, where no Rust
    // object lives; volatile so that every write reaches memory.
    unsafe { (addr as *mut u64).write_volatile(value) };
    true
}

/// Reads a word of scratch RAM (`None` outside it).
pub fn scratch_read(addr: u64) -> Option<u64> {
    if !scratch(addr) {
        return None;
    }
    // SAFETY: as for scratch_write; the read has no side effects.
    Some(unsafe { (addr as *const u64).read_volatile() })
}
