//! `quadrant-hv`: the bare-metal hypervisor binary.
//!
//! Boot order (each step that can fail ends the run with a named
//! `quadrant-error` line, see `shared::line::ErrorKind`):
//! 1. console, descriptor tables, legacy PICs masked;
//! 2. the boot information from GRUB/QEMU (Multiboot 1 or 2,
//!    `arch::bootinfo`): the display (the console is mirrored there from
//!    now on), command line, memory map, the guest kernel as the first
//!    module;
//! 3. the guest image is validated *before* anything else is committed
//!    (so a bad image is reported even on a machine without VMX);
//! 4. physical memory: heap, guest RAM, frames for VMX and the shadow
//!    (or, with `mmu=ept`, for the identity EPT);
//! 5. the guest is loaded and its Multiboot information built;
//! 6. VMX: CPUID, IA32_FEATURE_CONTROL, capability MSRs (`mmu=ept` is
//!    refused here, before VMXON, on a CPU without EPT or unrestricted
//!    guest);
//! 7. the host CPUs (ACPI MADT or MP table, `cpus=`): every AP is started
//!    and does VMXON on its own ([`host_cpus`], `quadrant_ap_main`); the
//!    guest gets an ACPI MADT listing one vCPU per host CPU;
//! 8. VMXON and VMCS on the BSP, the VM is published, and every CPU runs
//!    its vCPU until the guest writes its status to port 0xf4 (vCPU 0 from
//!    the Multiboot hand-off, the others once the guest starts them).
//!
//! Unsafe code here: the global allocator's heap hand-over and the creation
//! of the owning memory objects from the physical memory plan and from the
//! boot loader's display description.
#![no_std]
#![no_main]

extern crate alloc;

mod host_cpus;

use bare_rt as _;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use hypervisor::arch::memory::PhysAllocator;
use hypervisor::arch::bootinfo::BootInfo;
use hypervisor::arch::phys::{BootMemory, DisplayMemory, FramePool, GuestRam, ShadowPool, FRAME};
use hypervisor::arch::screen::Screen;
use hypervisor::arch::{console, cpu, descriptors};
use hypervisor::config::{Config, MmuMode};
use hypervisor::mmu::{MmuConfig, ShadowCache, VcpuMask};
use hypervisor::vcpu::ept::EptPaging;
use hypervisor::vcpu::{self, setup, PagingBackend, Vcpu};
use hypervisor::vm::{MmuLock, MmuState, Vm, MAX_VCPUS};
use hypervisor::vmx::caps::{self, FeatureControl, VmxCaps};
use hypervisor::vmx::ept::{self, IdentityEpt};
use hypervisor::vmx::instr::VmxOn;
use hypervisor::{fatal, loader};
use linked_list_allocator::LockedHeap;
use shared::line::ErrorKind;
use shared::multiboot::{self, MmapEntry};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Heap for the hypervisor's own data structures.
const HEAP_SIZE: u64 = 8 << 20;
/// Frames of the shadow page pool (PAE roots included).
const SHADOW_FRAMES: usize = 1024;
/// Stack of each AP (the BSP runs on bare-rt's 128 KiB boot stack).
const AP_STACK: u64 = 64 << 10;
/// Where the guest's ACPI tables go (guest-physical, inside the reserved
/// 0x9F000..0x100000 where a guest searches for the RSDP).
const GUEST_ACPI_GPA: u64 = 0xE_0000;
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

/// What every CPU needs to build its vCPU, decided by the BSP.
struct Setup {
    caps: VmxCaps,
    controls: setup::Controls,
    ept: Option<IdentityEpt>,
    maxphyaddr: u8,
    start: setup::GuestStart,
}

static SETUP: spin::Once<Setup> = spin::Once::new();
static VM: spin::Once<Vm> = spin::Once::new();
/// Each CPU's VMXON region and VMCS frames, by host CPU index.
static VMX_FRAMES: [[AtomicU64; 2]; MAX_VCPUS] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_VCPUS];

/// The MMU core's synchronous remote TLB flush (`ShadowFrames::flush_remote_tlbs`).
fn remote_flush(mask: VcpuMask) {
    if let Some(vm) = VM.get() {
        vm.flush_mask(mask);
    }
}

/// Makes this CPU ready for VMXON and executes it (SDM Vol. 3C 24.7):
/// IA32_FEATURE_CONTROL (enabled and locked by us when the firmware left it
/// unlocked), the CR0/CR4 fixed bits with CR4.VMXE, EFER.NXE so shadow
/// entries may use XD (Vol. 3A 4.1.4), then VMXON on this CPU's frame.
fn vmx_on_this_cpu(c: &VmxCaps, index: usize) -> VmxOn {
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX.
    let fc = unsafe { cpu::rdmsr(caps::IA32_FEATURE_CONTROL) };
    match caps::feature_control_verdict(fc) {
        FeatureControl::LockedEnabled => {}
        FeatureControl::Unlocked => {
            // SAFETY: enabling VMX outside SMX and locking is what firmware
            // would do; the MSR is unlocked, so the write is allowed.
            unsafe { cpu::wrmsr(caps::IA32_FEATURE_CONTROL, caps::feature_control_enable(fc)) };
        }
        v @ FeatureControl::LockedDisabled => {
            fatal::fail(ErrorKind::VmxLocked, format_args!("host CPU {index}: {}", v.message(fc)))
        }
    }
    // Host CR0/CR4 with the VMX fixed bits, CR4.VMXE, and EFER.NXE so shadow
    // entries may use the XD bit (SDM Vol. 3C A.7, A.8; Vol. 3A 4.1.4).
    // SAFETY: the fixed bits only force PE/PG/NE (already set) and VMXE.
    unsafe {
        cpu::write_cr0(caps::fixed_cr(cpu::cr0(), c.cr0_fixed0, c.cr0_fixed1));
        cpu::write_cr4(caps::fixed_cr(cpu::cr4() | (1 << 13), c.cr4_fixed0, c.cr4_fixed1));
        if cpu::cpuid(0x8000_0001, 0).3 & (1 << 20) != 0 {
            cpu::wrmsr(caps::IA32_EFER, cpu::rdmsr(caps::IA32_EFER) | (1 << 11));
        }
    }
    let region = VMX_FRAMES[index][0].load(SeqCst);
    // SAFETY: CR4.VMXE and the fixed bits are set, FEATURE_CONTROL allows
    // VMX, and the frame (allocated by the BSP for this CPU alone) holds the
    // revision id.
    unsafe { VmxOn::enter(region) }
        .unwrap_or_else(|e| fatal::fail(ErrorKind::VmEntryFailure, format_args!("VMXON failed on host CPU {index}: {e}")))
}

/// Builds host CPU `index`'s vCPU on the published VM and runs it.
fn run_vcpu(index: usize, vmx: &VmxOn) -> ! {
    let s = SETUP.get().expect("the BSP publishes the setup before the VM");
    let vm = VM.get().expect("run_vcpu runs once the VM is published");
    let frame = VMX_FRAMES[index][1].load(SeqCst);
    // SAFETY: the VMCS frame holds the revision id and belongs to this CPU.
    let vmcs = unsafe { vmx.load(frame) }
        .unwrap_or_else(|e| fatal::fail(ErrorKind::VmEntryFailure, format_args!("VMCLEAR/VMPTRLD failed on host CPU {index}: {e}")));
    let paging = match s.ept {
        Some(map) => PagingBackend::Ept(EptPaging::new(map, &s.caps, s.maxphyaddr)),
        None => PagingBackend::Shadow,
    };
    Vcpu::new(vm, index, vmcs, s.caps, s.controls, paging, s.start).run()
}

/// An application processor, from bare-rt's trampoline: its own
/// descriptor tables and local APIC, VMXON, then its vCPU once the BSP has
/// published the VM (it waits for a start-up IPI from the guest).
#[unsafe(no_mangle)]
extern "C" fn quadrant_ap_main(_ticket: u32, _page: u64) -> ! {
    let index = host_cpus::this_cpu();
    descriptors::init_cpu(index);
    host_cpus::apic().software_enable(hypervisor::vm::SPURIOUS_VECTOR);
    // SAFETY: VmxCaps::read only reads capability MSRs that exist.
    let vmx_caps = VmxCaps::read(|msr| unsafe { cpu::rdmsr(msr) });
    let vmx = vmx_on_this_cpu(&vmx_caps, index);
    while VM.get().is_none() {
        core::hint::spin_loop();
    }
    run_vcpu(index, &vmx)
}

/// Physical memory as the boot loader left it.
struct Boot;
impl shared::multiboot::PhysRead for Boot {
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
    descriptors::init_cpu(0);
    cpu::mask_legacy_pics();

    let boot = BootInfo::parse(magic, info_addr).unwrap_or_else(|e| {
        if e.is_modules() {
            bad_image(format_args!("{e}"))
        }
        fatal::hypervisor_fault(format_args!("{e}"))
    });
    if let Some(fb) = boot.display() {
        // SAFETY: the boot loader described this display memory (or, on a
        // BIOS boot, it is the VGA text buffer); nothing else draws there.
        match unsafe { DisplayMemory::new(fb.addr, fb.byte_len()) }.and_then(|m| Screen::new(m, fb)) {
            Ok(screen) => console::attach_screen(screen),
            Err(why) => log::warn!("no output on the display {fb:?}: {why}"),
        }
    }

    // Command line.
    let cmdline = boot.cmdline();
    let config = Config::parse(cmdline, |w| log::warn!("unknown command-line word `{w}` ignored"))
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("command line `{cmdline}`: {e}")));
    fatal::set_reboot_after(config.reboot_after);
    log::set_max_level(config.log);
    console::with_console(|c| {
        let _ = shared::line::write_hv_start(c, config.mmu.as_str());
        let _ = core::fmt::Write::write_str(c, "\n");
    });
    log::info!("command line: `{cmdline}` ({}; ACPI RSDP {:x?})", boot.protocol.as_str(), boot.rsdp);
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
    let Some(module) = boot.modules().first() else {
        bad_image(format_args!(
            "no guest kernel: pass it as the first Multiboot module (GRUB: `module /boot/quadrant-guest`, QEMU: -initrd)"
        ))
    };
    if module.end <= module.start {
        bad_image(format_args!("the guest module is empty ({:#x}..{:#x})", module.start, module.end));
    }
    let guest_cmdline_full = module.cmdline();
    // SAFETY: GRUB/QEMU placed the module in RAM below 4 GiB; the physical
    // allocator below reserves its range, so nothing overwrites it.
    let image = unsafe { BootMemory.module(module.start, module.end) };

    // Physical memory.
    let mut available: [Range<u64>; 32] = [const { 0..0 }; 32];
    let mut n = 0;
    for e in boot.memory_map().iter().filter(|e| e.is_available()) {
        if n < available.len() {
            available[n] = e.base..e.end();
            n += 1;
        }
    }
    let image_range = (&raw const __load_start) as u64..(&raw const __image_end) as u64;
    // The boot information stays: `boot.rsdp` points into it.
    let reserved = [0..0x10_0000, image_range, module.start..module.end, boot.info_range.clone()];
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
    if let v @ FeatureControl::LockedDisabled = caps::feature_control_verdict(fc) {
        fatal::fail(ErrorKind::VmxLocked, format_args!("{}", v.message(fc)));
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

    // The host CPUs: one vCPU each (SDM Vol. 3A 9.4: MP initialisation).
    let bsp_apic = host_cpus::init_bsp()
        .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("the boot CPU's local APIC: {e}")));
    let limit = config.cpus.unwrap_or(MAX_VCPUS);
    let ncpus = match shared::acpi::find_cpus(&Boot, boot.rsdp) {
        Ok(list) => {
            if list.dropped > 0 {
                log::warn!("{} processors beyond the first {MAX_VCPUS} are not used", list.dropped);
            }
            let n = host_cpus::choose(&list, bsp_apic, limit);
            log::info!("host CPUs: {} found ({:?}), using {n}", list.count, list.source);
            n
        }
        Err(e) => {
            log::warn!("no processor table ({e}): running one vCPU on the boot CPU");
            host_cpus::choose(&shared::acpi::CpuList { count: 0, ..single_cpu(bsp_apic) }, bsp_apic, 1)
        }
    };

    let ram_base = take("guest RAM (lower guest_ram=)", config.guest_ram, 2 << 20);
    let fixed_base = take("VMX frames", 2 * ncpus as u64 * FRAME, FRAME);
    let paging_frames = if ept { EPT_FRAMES } else { SHADOW_FRAMES };
    let paging_base = take(if ept { "EPT frames" } else { "shadow page frames" }, paging_frames as u64 * FRAME, FRAME);
    let ap_stacks = take("AP stacks", AP_STACK * (ncpus as u64 - 1).max(1), FRAME);
    // SAFETY: each range was allocated once above, below 4 GiB, and is
    // owned by the object built from it for the rest of the run.
    let (ram, mut fixed, paging_pool) = unsafe {
        (
            GuestRam::new(ram_base, config.guest_ram),
            FramePool::new(fixed_base, 2 * ncpus),
            FramePool::new(paging_base, paging_frames),
        )
    };
    log::info!(
        "guest RAM: {} MiB at host {:#x}; {} pool {} frames; {ncpus} vCPUs",
        config.guest_ram >> 20,
        ram_base,
        if ept { "EPT" } else { "shadow" },
        paging_frames
    );

    // Load the guest and build its Multiboot information and ACPI tables.
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
    // One Processor Local APIC entry per vCPU, with the host CPU's APIC ID.
    let mut apic_ids = [0u32; MAX_VCPUS];
    for (slot, id) in apic_ids.iter_mut().zip(host_cpus::ids()) {
        *slot = id;
    }
    let mut acpi = [0u8; shared::acpi::guest_tables_len(MAX_VCPUS)];
    let acpi_len =
        shared::acpi::build_guest_tables(&mut acpi, GUEST_ACPI_GPA, &apic_ids[..ncpus], shared::acpi::LAPIC_DEFAULT_BASE as u32)
            .unwrap_or_else(|| fatal::fail(ErrorKind::Unsupported, format_args!("the host APIC IDs {:?} do not fit an xAPIC MADT", &apic_ids[..ncpus])));
    ram.write(GUEST_ACPI_GPA, &acpi[..acpi_len]);
    log::info!("guest `{guest_cmdline_full}` loaded ({:?}, entry {:#x})", plan.kind, plan.entry);

    // Each CPU's VMXON region and VMCS, holding the revision id.
    let revision = (vmx_caps.basic & 0x7fff_ffff) as u32;
    for frames in &VMX_FRAMES[..ncpus] {
        for f in frames {
            let Some(frame) = fixed.alloc() else {
                fatal::hypervisor_fault(format_args!("no frames for the VMXON regions and VMCSs"));
            };
            fixed.write_u32_at(frame, 0, revision);
            f.store(frame, SeqCst);
        }
    }
    let maxphyaddr = match (cpu::cpuid(0x8000_0008, 0).0 & 0xff) as u8 {
        0 => 36,
        m => m,
    };
    let (ept_map, mmu) = if ept {
        let mut pool = paging_pool;
        let map = ept::build_identity(&mut pool, ram.base_hpa(), ram.size())
            .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("mmu=ept: the identity EPT cannot be built: {e}")));
        log::info!("identity EPT: guest-physical 0..{:#x} in 2 MiB WB leaves, {} tables, EPTP {:#x}", map.size, map.tables, map.eptp);
        (Some(map), None)
    } else {
        let mmu_config = MmuConfig { maxphyaddr, cache: config.cache, ..MmuConfig::new(SHADOW_FRAMES) };
        if !config.cache {
            log::warn!("cache=0: every shadow page is dropped at each guest CR3 load (the behaviour before the cache)");
        }
        let mut cache = ShadowCache::new(mmu_config, ShadowPool::new(paging_pool, &ram, remote_flush))
            .unwrap_or_else(|e| fatal::hypervisor_fault(format_args!("the shadow page pool cannot be built: {e:?}")));
        let mut vcpus = [const { None }; MAX_VCPUS];
        for (id, slot) in vcpus[..ncpus].iter_mut().enumerate() {
            let (vmmu, flush) = cache
                .add_vcpu(id as u32)
                .unwrap_or_else(|e| fatal::hypervisor_fault(format_args!("no shadow root for vCPU {id}: {e:?}")));
            flush.done();
            *slot = Some(vmmu);
        }
        (None, Some(MmuLock::new(MmuState { cache, vcpus })))
    };
    let start = setup::GuestStart { rip: plan.entry as u64, info: GUEST_INFO_GPA, vm86_tss: VM86_TSS_GPA };
    SETUP.call_once(|| Setup { caps: vmx_caps, controls, ept: ept_map, maxphyaddr, start });

    // The APs come up and do VMXON; they wait for the VM to be published.
    if ncpus > 1 {
        let page = trampoline_page(&available[..n])
            .unwrap_or_else(|| fatal::fail(ErrorKind::Unsupported, format_args!("no free page below 1 MiB for the AP start-up code")));
        // SAFETY: the page is free RAM below 1 MiB (the Multiboot
        // information was read out already) and the stacks were allocated
        // for the APs alone.
        unsafe { host_cpus::start_aps(page, ap_stacks, AP_STACK) }
            .unwrap_or_else(|e| fatal::fail(ErrorKind::Unsupported, format_args!("starting the host CPUs: {e}")));
        log::info!("{} application processors started (trampoline at {page:#x})", ncpus - 1);
    }
    let vmx = vmx_on_this_cpu(&vmx_caps, 0);
    VM.call_once(|| Vm::new(ram, mmu, host_cpus::HOST_OPS, config, &apic_ids[..ncpus]));
    log::info!("entering the guest at {:#x}", start.rip);
    run_vcpu(0, &vmx)
}

/// A processor list holding only the boot CPU.
fn single_cpu(bsp: u32) -> shared::acpi::CpuList {
    let mut apic_ids = [0; shared::acpi::MAX_CPUS];
    apic_ids[0] = bsp;
    shared::acpi::CpuList {
        apic_ids,
        count: 1,
        dropped: 0,
        lapic_base: shared::acpi::LAPIC_DEFAULT_BASE,
        source: shared::acpi::CpuSource::AcpiMadt,
    }
}

/// A 4 KiB page of available RAM below 1 MiB for the AP trampoline (0x8000
/// when the memory map allows, else the highest such page).
fn trampoline_page(available: &[Range<u64>]) -> Option<u64> {
    let free = |p: u64| available.iter().any(|r| r.start <= p && p + FRAME <= r.end);
    if free(0x8000) {
        return Some(0x8000);
    }
    (1..0x9Fu64).rev().map(|i| i << 12).find(|&p| free(p))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal::hypervisor_fault(format_args!("panic: {info}"))
}
