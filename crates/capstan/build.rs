// Link options of the capstan binary.
// Packed relative relocations (RELR): a position-independent binary keeps ASLR but carries one
// 24-byte `.rela.dyn` entry per pointer in its read-only data (3.6 MB of the binary); RELR
// writes them as bitmaps (glibc ≥ 2.36, binutils ≥ 2.38 — Debian 12).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
