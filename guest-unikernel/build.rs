//! Build script of a bare-metal kernel: see bare-rt/link.rs.
include!("../bare-rt/link.rs");
