// Link arguments for a bare-metal kernel binary, shared by the build
// scripts of `hypervisor` and `guest-unikernel` (each `include!`s this
// file). `rustc-link-arg-bins` reaches only the binary, so `cargo test` of
// the same package never sees them (FACTS.md).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../bare-rt/linker.ld");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--build-id=none",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T{script}");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed={dir}/../bare-rt/link.rs");
}
