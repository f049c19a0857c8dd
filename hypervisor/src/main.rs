//! `quadrant-hv`: the bare-metal hypervisor binary.
//!
//! Boot order (each step that can fail ends the run with a named
//! `quadrant-error` line, see `shared::line::ErrorKind`):
//! 1. console, descriptor tables, legacy PICs masked;
//! 2. the Multiboot information from GRUB/QEMU: command line, memory map,
//!    the guest kernel as the first module;
//! 3. the guest image is validated *before* anything else is committed
//!    (so a bad image is reported even on a machine without VMX);
//! 4. physical memory: heap, guest RAM, frames for VMX and the shadow
//!    (or, with `mmu=ept`, for the identity EPT);
//! 5. the guest is loaded and its Multiboot information built;
//! 6. VMX: CPUID, IA32_FEATURE_CONTROL, capability MSRs (`mmu=ept` is
//!    refused here, before VMXON, on a CPU without EPT or unrestricted
//!    guest), VMXON, VMCS;
//! 7. the vCPU runs until the guest writes its status to port 0xf4.
//!
//! Unsafe code here: the global allocator's heap hand-over and the creation
//! of the owning memory objects from the physical memory plan.
#![no_std]
#![no_main]

extern crate alloc;

use bare_rt as _;
use core::ops::Range;
use hypervisor::arch::memory::PhysAllocator;
use hypervisor::arch::phys::{BootMemory, FramePool, GuestRam, ShadowPool, FRAME};
use hypervisor::arch::{console, cpu, descriptors};
use hypervisor::config::{Config, MmuMode};
use hypervisor::mmu::{MmuConfig, ShadowCache};
use hypervisor::vcpu::ept::EptPaging;
use hypervisor::vcpu::{self, setup, PagingBackend, ShadowPaging, Vcpu};
use hypervisor::vmx::caps::{self, FeatureControl, VmxCaps};
use hypervisor::vmx::ept;
use hypervisor::vmx::instr::VmxOn;
use hypervisor::{fatal, loader};
use linked_list_allocator::LockedHeap;
use shared::line::ErrorKind;
use shared::multiboot::{self, MmapEntry, PhysRead};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Heap for the hypervisor's own data structures.
const HEAP_SIZE: u64 = 8 << 20;
/// Frames of the shadow page pool (PAE roots included).
const SHADOW_FRAMES: usize = 1024;
/// Frames for the identity EPT (`mmu=ept`): a PML4, a PDPT and one PD per
/// GiB of guest RAM (`vmx::ept::tables_needed`) fit up to 6 GiB.
const EPT_FRAMES: usize = 8;
/// Where the guest's Multiboot information block goes (guest-physical),
/// and how much room it has.
const GUEST_INFO_GPA: u64 = 0x8000;
const GUEST_INFO_SIZE: usize = 0x2000;
/// The page of guest RAM that holds the TSS used while the guest's real
/// mode runs as virtual-8086 mode (reserved in the guest's memory map).
const VM86_TSS_GPA: u64 = 0x9_F000;

unsafe extern "C" {
    static __load_start: u8;
    static __image_end: u8;
}

/// Physical memory as the boot loader left it.
struct Boot;
impl PhysRead for Boot {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        BootMemory.read(addr, buf)
    }
}

/// Adapts guest RAM to the loader's copy interface.
struct LoadTarget<'a>(&'a GuestRam);
impl loader::GuestRam for LoadTarget<'_> {
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        self.0.write(gpa, bytes)
    }
    fn zero(&mut self, gpa: u64, len: usize) -> bool {
        self.0.zero(gpa, len)
    }
}

fn bad_image(text: core::fmt::Arguments<'_>) -> ! {
    fatal::fail(ErrorKind::BadGuestImage, text)
}

#[unsafe(no_mangle)]
extern "C" fn quadrant_kernel_main(magic: u32, info_addr: u32) -> ! {
    console::init(log::LevelFilter::Info);
    descriptors::init();
    cpu::mask_legacy_pics();

    if magic != multiboot::BOOTLOADER_MAGIC {
        fatal::hypervisor_fault(format_args!(
            "not started by a Multiboot 1 loader: EAX = {magic:#x}, expected {:#x}",
            multiboot::BOOTLOADER_MAGIC
        ));
    }
    let info = multiboot::parse(&Boot, info_addr as u64)
        .unwrap_or_else(|e| fatal::hypervisor_fault(format_args!("the Multiboot information is unreadable: {e:?}")));

    // Command line.
    let mut cmdline_buf = [0u8; 512];
    let cmdline = info
        .cmdline_addr
        .and_then(|a| multiboot::read_cstr(&Boot, a as u64, &mut cmdline_buf))
        .unwrap_or("");
    let config = Config::parse(cmdline, |w| log::warn!("unknown command-line word `{w}` ignored"))
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("command line `{cmdline}`: {e}")));
    log::set_max_level(config.log);
    console::with_console(|c| {
        let _ = shared::line::write_hv_start(c, config.mmu.as_str());
        let _ = core::fmt::Write::write_str(c, "\n");
    });
    log::info!("command line: `{cmdline}`");
    for bug in hypervisor::mmu::inject::active() {
        log::warn!("this build has the deliberate MMU bug `{bug}` (cargo feature inject-{bug}): its results are not Quadrant's");
    }
    let ept = config.mmu == MmuMode::Ept;
    if ept && !config.cache {
        log::warn!("cache=0 concerns the shadow page cache: it has no effect under mmu=ept");
    }
    if ept && config.audit {
        log::warn!("audit=1 checks the shadow page cache: it has nothing to check under mmu=ept");
    }

    // The guest module.
    let mut modules = info.modules(&Boot);
    let module = match modules.next() {
        Some(Ok(m)) => m,
        Some(Err(e)) => bad_image(format_args!("the Multiboot module list is unreadable: {e:?}")),
        None => bad_image(format_args!(
            "no guest kernel: pass it as the first Multiboot module (GRUB: `module /boot/quadrant-guest`, QEMU: -initrd)"
        )),
    };
    if module.end <= module.start {
        bad_image(format_args!("the guest module is empty ({:#x}..{:#x})", module.start, module.end));
    }
    let mut guest_cmdline_buf = [0u8; 512];
    let guest_cmdline_full =
        multiboot::read_cstr(&Boot, module.cmdline_addr as u64, &mut guest_cmdline_buf).unwrap_or("");
    // SAFETY: GRUB/QEMU placed the module in RAM below 4 GiB; the physical
    // allocator below reserves its range, so nothing overwrites it.
    let image = unsafe { BootMemory.module(module.start as u64, module.end as u64) };

    // Physical memory.
    let mut available: [Range<u64>; 32] = [const { 0..0 }; 32];
    let mut n = 0;
    for e in info.mmap(&Boot) {
        match e {
            Ok(e) if e.is_available() && n < available.len() => {
                available[n] = e.base..e.end();
                n += 1;
            }
            Ok(_) => {}
            Err(err) => fatal::hypervisor_fault(format_args!("the firmware memory map is unreadable: {err:?}")),
        }
    }
    let image_range = (&raw const __load_start) as u64..(&raw const __image_end) as u64;
    let reserved = [0..0x10_0000, image_range, module.start as u64..module.end as u64];
    let mut phys = PhysAllocator::new(available[..n].iter().cloned(), &reserved, 1 << 32);
    log::info!("physical memory: {} MiB free below 4 GiB", phys.total_free() >> 20);
    let mut take = |what: &str, size: u64, align: u64| {
        phys.alloc(size, align)
            .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("cannot allocate {what}: {e}")))
    };
    let heap = take("the heap", HEAP_SIZE, FRAME);
    // SAFETY: the range was just carved out of free RAM for the heap alone.
    unsafe { HEAP.lock().init(heap as *mut u8, HEAP_SIZE as usize) };
    // The image is checked before any guest memory is committed, and
    // before VMX: a bad image is reported even where VMX is missing.
    let plan = loader::parse(image).unwrap_or_else(|e| bad_image(format_args!("guest module `{guest_cmdline_full}`: {e}")));
    let ram_base = take("guest RAM (lower guest_ram=)", config.guest_ram, 2 << 20);
    let fixed_base = take("VMX frames", 2 * FRAME, FRAME);
    let paging_frames = if ept { EPT_FRAMES } else { SHADOW_FRAMES };
    let paging_base = take(if ept { "EPT frames" } else { "shadow page frames" }, paging_frames as u64 * FRAME, FRAME);
    // SAFETY: each range was allocated once above, below 4 GiB, and is
    // owned by the object built from it for the rest of the run.
    let (ram, mut fixed, paging_pool) = unsafe {
        (
            GuestRam::new(ram_base, config.guest_ram),
            FramePool::new(fixed_base, 2),
            FramePool::new(paging_base, paging_frames),
        )
    };
    log::info!(
        "guest RAM: {} MiB at host {:#x}; {} pool {} frames",
        config.guest_ram >> 20,
        ram_base,
        if ept { "EPT" } else { "shadow" },
        paging_frames
    );

    // Load the guest and build its Multiboot information.
    let reserved_gpa = [GUEST_INFO_GPA..GUEST_INFO_GPA + GUEST_INFO_SIZE as u64, VM86_TSS_GPA..0x10_0000];
    plan.validate(config.guest_ram, &reserved_gpa)
        .unwrap_or_else(|e| bad_image(format_args!("guest module `{guest_cmdline_full}`: {e}")));
    plan.load(image, &mut LoadTarget(&ram))
        .unwrap_or_else(|e| bad_image(format_args!("guest module `{guest_cmdline_full}`: {e}")));
    let guest_mmap = [
        MmapEntry { base: 0, len: VM86_TSS_GPA, kind: multiboot::MMAP_AVAILABLE },
        MmapEntry { base: VM86_TSS_GPA, len: 0x10_0000 - VM86_TSS_GPA, kind: multiboot::MMAP_RESERVED },
        MmapEntry { base: 0x10_0000, len: config.guest_ram - 0x10_0000, kind: multiboot::MMAP_AVAILABLE },
    ];
    let mut info_block = [0u8; GUEST_INFO_SIZE];
    let used = multiboot::build(
        &mut info_block,
        GUEST_INFO_GPA as u32,
        (VM86_TSS_GPA >> 10) as u32,
        ((config.guest_ram - 0x10_0000) >> 10) as u32,
        &guest_mmap,
        guest_cmdline_full,
        "Quadrant hypervisor",
    )
    .unwrap_or_else(|e| bad_image(format_args!("the guest command line does not fit the information block: {e:?}")));
    ram.write(GUEST_INFO_GPA, &info_block[..used]);
    // The vm86 TSS: zero (no redirection: INT n uses the real-mode IVT), I/O
    // map base at the limit (no port permitted).
    ram.zero(VM86_TSS_GPA, 4096);
    ram.write(VM86_TSS_GPA + vcpu::TSS_IOMAP_BASE, &(vcpu::VM86_TSS_LIMIT as u16).to_le_bytes());
    log::info!("guest `{guest_cmdline_full}` loaded ({:?}, entry {:#x})", plan.kind, plan.entry);

    // VMX (SDM Vol. 3C 24.6: discovering support; 24.7: enabling).
    let (_, _, ecx1, _) = cpu::cpuid(1, 0);
    if ecx1 & (1 << 5) == 0 {
        fatal::fail(
            ErrorKind::NoVmx,
            format_args!(
                "CPUID.1:ECX.VMX[bit 5] = 0: this CPU has no VMX (Intel VT-x). Run Quadrant in Bochs, under KVM with nested VMX, or on an Intel machine with VT-x"
            ),
        );
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX.
    let fc = unsafe { cpu::rdmsr(caps::IA32_FEATURE_CONTROL) };
    match caps::feature_control_verdict(fc) {
        FeatureControl::LockedEnabled => {}
        FeatureControl::Unlocked => {
            // SAFETY: enabling VMX outside SMX and locking is what firmware
            // would do; the MSR is unlocked, so the write is allowed.
            unsafe { cpu::wrmsr(caps::IA32_FEATURE_CONTROL, caps::feature_control_enable(fc)) };
        }
        v @ FeatureControl::LockedDisabled => fatal::fail(ErrorKind::VmxLocked, format_args!("{}", v.message(fc))),
    }
    // SAFETY: VmxCaps::read only reads capability MSRs that exist (it checks
    // the allowed-1 bits before the optional ones).
    let vmx_caps = VmxCaps::read(|msr| unsafe { cpu::rdmsr(msr) });
    log::info!(
        "VMX: revision {:#x}, EPT {}, unrestricted guest {}, VPID {}",
        vmx_caps.basic & 0x7fff_ffff,
        vmx_caps.has_ept(),
        vmx_caps.has_unrestricted_guest(),
        vmx_caps.has_vpid()
    );
    let controls = if ept {
        // SDM Vol. 3C 25.6.2 (secondary controls), 29.3 (EPT); Vol. 3D A.10.
        let controls = setup::Controls::for_ept(&vmx_caps).unwrap_or_else(|e| {
            fatal::fail(ErrorKind::Unsupported, format_args!("mmu=ept needs EPT and unrestricted guest: {e}; use mmu=shadow on this CPU"))
        });
        if let Some(missing) = ept::missing_capability(vmx_caps.ept_vpid) {
            fatal::fail(ErrorKind::Unsupported, format_args!("mmu=ept: this CPU's EPT lacks {missing}; use mmu=shadow"));
        }
        controls
    } else {
        setup::Controls::for_shadow_paging(&vmx_caps)
            .unwrap_or_else(|e| fatal::fail(ErrorKind::VmEntryFailure, format_args!("{e}")))
    };

    // Host CR0/CR4 with the VMX fixed bits, CR4.VMXE, and EFER.NXE so shadow
    // entries may use the XD bit (SDM Vol. 3C A.7, A.8; Vol. 3A 4.1.4).
    // SAFETY: the fixed bits only force PE/PG/NE (already set) and VMXE.
    unsafe {
        cpu::write_cr0(caps::fixed_cr(cpu::cr0(), vmx_caps.cr0_fixed0, vmx_caps.cr0_fixed1));
        cpu::write_cr4(caps::fixed_cr(cpu::cr4() | (1 << 13), vmx_caps.cr4_fixed0, vmx_caps.cr4_fixed1));
        if cpu::cpuid(0x8000_0001, 0).3 & (1 << 20) != 0 {
            cpu::wrmsr(caps::IA32_EFER, cpu::rdmsr(caps::IA32_EFER) | (1 << 11));
        }
    }
    let revision = (vmx_caps.basic & 0x7fff_ffff) as u32;
    let (Some(vmxon_frame), Some(vmcs_frame)) = (fixed.alloc(), fixed.alloc()) else {
        fatal::hypervisor_fault(format_args!("no frames for the VMXON region and VMCS"));
    };
    fixed.write_u32_at(vmxon_frame, 0, revision);
    fixed.write_u32_at(vmcs_frame, 0, revision);
    // SAFETY: CR4.VMXE and the fixed bits are set, FEATURE_CONTROL allows
    // VMX, and the frame holds the revision id and is used for nothing else.
    let vmx = unsafe { VmxOn::enter(vmxon_frame) }
        .unwrap_or_else(|e| fatal::fail(ErrorKind::VmEntryFailure, format_args!("VMXON failed: {e}")));
    // SAFETY: the VMCS frame holds the revision id and is owned for the run.
    let vmcs = unsafe { vmx.load(vmcs_frame) }
        .unwrap_or_else(|e| fatal::fail(ErrorKind::VmEntryFailure, format_args!("VMCLEAR/VMPTRLD failed: {e}")));

    let maxphyaddr = match (cpu::cpuid(0x8000_0008, 0).0 & 0xff) as u8 {
        0 => 36,
        m => m,
    };
    let paging = if ept {
        let mut pool = paging_pool;
        let map = ept::build_identity(&mut pool, ram.base_hpa(), ram.size())
            .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("mmu=ept: the identity EPT cannot be built: {e}")));
        log::info!("identity EPT: guest-physical 0..{:#x} in 2 MiB WB leaves, {} tables, EPTP {:#x}", map.size, map.tables, map.eptp);
        PagingBackend::Ept(EptPaging::new(map, &vmx_caps, maxphyaddr))
    } else {
        let mmu_config = MmuConfig { maxphyaddr, cache: config.cache, ..MmuConfig::new(SHADOW_FRAMES) };
        if !config.cache {
            log::warn!("cache=0: every shadow page is dropped at each guest CR3 load (the behaviour before the cache)");
        }
        let mut mmu = ShadowCache::new(mmu_config, ShadowPool::new(paging_pool, &ram))
            .unwrap_or_else(|e| fatal::hypervisor_fault(format_args!("the shadow page pool cannot be built: {e:?}")));
        let (vmmu, flush) = mmu
            .add_vcpu(0)
            .unwrap_or_else(|e| fatal::hypervisor_fault(format_args!("no shadow root for vCPU 0: {e:?}")));
        flush.done();
        PagingBackend::Shadow(ShadowPaging { mmu, vmmu })
    };
    let start = setup::GuestStart { rip: plan.entry as u64, info: GUEST_INFO_GPA, vm86_tss: VM86_TSS_GPA };
    log::info!("entering the guest at {:#x}", start.rip);
    Vcpu::new(vmcs, vmx_caps, controls, ram, paging, start, config).run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal::hypervisor_fault(format_args!("panic: {info}"))
}
